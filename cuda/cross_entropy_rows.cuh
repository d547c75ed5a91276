#pragma once
// The row kernel of the CUDA cross entropy engine (cross_entropy.cu launches it): its operands,
// and the per-block partial sums the finishing kernel adds. See cross_entropy.cu for the design.

#include <cuda_runtime.h>

#include <limits>

#include "cuda/deferred_errors.cuh"
#include "cuda/row_reduce.cuh"
#include "kernels/multiclass_loss.h"

namespace fusedloss {
namespace cuda {
namespace cross_entropy_detail {

constexpr int kBigGroup = 512;  // threads of the block that owns one long row
constexpr int kPartials = 4;    // per block: sums of row losses, z-losses, target weights, rows
constexpr int kBatch = 2;       // 16-byte packs a thread loads before it uses them

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename scalar_t>
struct Rows {
  using acc = acc_t<scalar_t>;
  int64_t rows, num_classes, row_offset;
  const scalar_t* logits;
  const int64_t* target_index;
  const scalar_t* target_prob;
  const scalar_t* weight;   // nullptr: ones
  const acc* grad_scales;   // [loss term, z-loss term] in device memory; nullptr: the two below
  acc scale, z_scale;       // the factors when grad_scales is nullptr
  acc* row_loss;            // rows mode
  acc* row_z_loss;          // rows mode, nullptr when z_loss == 0
  scalar_t* loss_out;       // whole op, 'none': loss + z-loss per row
  scalar_t* z_out;          // whole op, 'none': z-loss per row
  double* partials;         // whole op, reduced: kPartials per block
  scalar_t* grad_input;
  scalar_t* grad_target;
  int64_t ignore_index;
  acc smoothing, z_loss, cap;
  bool vectorized;  // rows (and gradients) 16-byte aligned: Pack loads and stores
  bool cached;      // the block's row is kept in dynamic shared memory between the sweeps
  ErrorSink sink;
};

// Sums kPartials doubles over the block; thread 0 writes them to out.
template <int kBlock>
__device__ void write_block_sums(const double (&v)[kPartials], double* out) {
  __shared__ double warp_sums[kBlock / 32][kPartials];
  double s[kPartials];
#pragma unroll
  for (int k = 0; k < kPartials; ++k) {
    s[k] = v[k];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      s[k] += __shfl_down_sync(0xffffffffu, s[k], offset);
    }
  }
  if (threadIdx.x % 32 == 0) {
#pragma unroll
    for (int k = 0; k < kPartials; ++k) warp_sums[threadIdx.x / 32][k] = s[k];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int k = 0; k < kPartials; ++k) {
      double total = 0;
      for (int w = 0; w < kBlock / 32; ++w) total += warp_sums[w][k];
      out[k] = total;
    }
  }
}

// At least 1024 threads per SM (at most 64 registers a thread): memory latency needs them.
template <typename scalar_t, int kGroup, int kBlock, bool kProb>
__global__ void __launch_bounds__(kBlock, 1024 / kBlock) cross_entropy_rows(Rows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  using formulas::softcap_slope;
  using formulas::softcapped;
  constexpr int kVec = 16 / sizeof(scalar_t);
  using P = Pack<scalar_t, kVec>;
  constexpr int kRowsPerBlock = kBlock / kGroup;
  __shared__ acc shared[kBlock / 32];
  extern __shared__ __align__(16) unsigned char cache_bytes[];
  scalar_t* cache = reinterpret_cast<scalar_t*>(cache_bytes);

  const int lane = threadIdx.x % kGroup;
  const int64_t C = a.num_classes;
  const acc cap = a.cap;
  const acc spread = a.smoothing / static_cast<acc>(C);
  const acc keep = acc(1) - a.smoothing;
  const bool spread_terms = kProb || spread != acc(0);
  const acc scale = a.grad_scales ? a.grad_scales[0] : a.scale;
  const acc z_scale = a.grad_scales ? a.grad_scales[1] : a.z_scale;
  const auto weight = [&](int64_t c) { return a.weight ? static_cast<acc>(a.weight[c]) : acc(1); };
  const auto capped = [&](scalar_t raw) {
    const acc v = static_cast<acc>(raw);
    return cap > acc(0) ? softcapped(v, cap) : v;
  };
  double sums[kPartials] = {0, 0, 0, 0};  // lane 0 of each group: its rows' contributions

  for (int64_t first = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock; first < a.rows;
       first += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t r = first + threadIdx.x / kGroup;
    if (r >= a.rows) continue;  // a whole group (only when groups are smaller than the block)
    const scalar_t* x = a.logits + r * C;
    const scalar_t* y = kProb ? a.target_prob + r * C : nullptr;
    const auto q_of = [&](int64_t c, acc y_c) {
      return formulas::cross_entropy_q<kProb>(weight(c), y_c, keep, spread);
    };

    int64_t t = -1;
    acc hard = 0, target_logit = 0, target_weight = 1;
    if constexpr (!kProb) {
      t = a.target_index[r];
      const bool ignored = t == a.ignore_index;
      if (ignored || t < 0 || t >= C) {  // 0 for ignored; NaN (never out of bounds) for bad
        const acc v = ignored ? acc(0) : std::numeric_limits<acc>::quiet_NaN();
        if (lane == 0) {
          if (!ignored) report_bad_value(a.sink, a.row_offset + r, t);
          if (a.row_loss) a.row_loss[r] = v;
          if (a.row_z_loss) a.row_z_loss[r] = v;
          if (a.loss_out) a.loss_out[r] = static_cast<scalar_t>(v);
          if (a.z_out) a.z_out[r] = static_cast<scalar_t>(v);
          sums[0] += v;
        }
        if (a.grad_input) {
          for (int64_t c = lane; c < C; c += kGroup) a.grad_input[r * C + c] = static_cast<scalar_t>(v);
        }
        continue;
      }
      target_weight = weight(t);
      hard = keep * target_weight;
      target_logit = capped(x[t]);
    }

    // Sweep 1: online max and sum of exp, and the q sums.
    formulas::SoftmaxState<acc> state;
    acc q_total = 0, q_dot_x = 0;
    const auto visit = [&](int64_t c, scalar_t raw, acc y_c) {
      const acc v = capped(raw);
      state.add(v);
      if (spread_terms) {  // without smoothing a class-index row has none: keeps 0 * -inf out
        const acc q = q_of(c, y_c);
        q_total += q;
        q_dot_x += q * v;
      }
    };
    if (a.vectorized) {
      // kBatch packs per thread at a time, all loaded before any is used (loads in flight), then
      // the batch's max first: one rescale per batch and one exp per logit.
      const int64_t packs = C / kVec;
      for (int64_t base = lane; base < packs; base += int64_t{kGroup} * kBatch) {
        P p[kBatch], yp[kBatch];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int64_t k = base + int64_t{b} * kGroup;
          if (k < packs) {
            p[b] = reinterpret_cast<const P*>(x)[k];
            if constexpr (kProb) yp[b] = reinterpret_cast<const P*>(y)[k];
          }
        }
        // Values are converted (and capped) twice rather than held: registers, not work, are
        // what limits the blocks in flight.
        acc batch_max = -std::numeric_limits<acc>::infinity();
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int64_t k = base + int64_t{b} * kGroup;
          if (k >= packs) continue;
          if (a.cached) reinterpret_cast<P*>(cache)[k] = p[b];
#pragma unroll
          for (int j = 0; j < kVec; ++j) {
            const acc v = capped(p[b].v[j]);
            batch_max = v > batch_max ? v : batch_max;  // NaN never wins
          }
        }
        state.rescale_to(batch_max);
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int64_t k = base + int64_t{b} * kGroup;
          if (k >= packs) continue;
#pragma unroll
          for (int j = 0; j < kVec; ++j) {
            const acc v = capped(p[b].v[j]);
            state.add_at_max(v);
            if (spread_terms) {  // without smoothing a class-index row has none: no 0 * -inf
              const acc q = q_of(k * kVec + j, kProb ? static_cast<acc>(yp[b].v[j]) : acc(0));
              q_total += q;
              q_dot_x += q * v;
            }
          }
        }
      }
    } else {
      for (int64_t c = lane; c < C; c += kGroup) {
        const scalar_t raw = x[c];
        if (a.cached) cache[c] = raw;
        visit(c, raw, kProb ? static_cast<acc>(y[c]) : acc(0));
      }
    }
    const acc max = group_all_reduce<kGroup, kBlock>(state.max, Max<acc>(), shared);
    // Each thread's sum rescaled to the row max (an empty part adds 0), then summed.
    const acc part = state.sum == acc(0) ? acc(0) : state.sum * formulas::exp_of(state.max - max);
    formulas::SoftmaxState<acc> row_state;
    row_state.max = max;
    row_state.sum = group_all_reduce<kGroup, kBlock>(part, Plus<acc>(), shared);
    row_state.finish();
    if (spread_terms) {
      q_total = group_all_reduce<kGroup, kBlock>(q_total, Plus<acc>(), shared);
      q_dot_x = group_all_reduce<kGroup, kBlock>(q_dot_x, Plus<acc>(), shared);
    }
    const auto row = formulas::cross_entropy_row<acc>(row_state.max, row_state.sum, q_total,
                                                      q_dot_x, hard, target_logit, a.z_loss,
                                                      scale, z_scale);
    if (lane == 0) {
      if (a.row_loss) a.row_loss[r] = row.loss;
      if (a.row_z_loss) a.row_z_loss[r] = row.z_loss;
      if (a.loss_out) a.loss_out[r] = static_cast<scalar_t>(row.loss + row.z_loss);
      if (a.z_out) a.z_out[r] = static_cast<scalar_t>(row.z_loss);
      sums[0] += row.loss;
      sums[1] += row.z_loss;
      sums[2] += kProb ? 1.0 : static_cast<double>(target_weight);
      sums[3] += 1.0;
    }
    if (!a.grad_input) continue;

    // Sweep 2: the gradient, written once. It may overwrite the logits in place
    // (linear_cross_entropy): every lane has read x[t] and its own part of the row above; a
    // warp group orders that before the writes here (block groups did in the reductions).
    if constexpr (kGroup <= 32) __syncwarp(group_mask<kGroup>());
    scalar_t* g = a.grad_input + r * C;
    scalar_t* gt = kProb && a.grad_target ? a.grad_target + r * C : nullptr;
    const auto gradient = [&](int64_t c, scalar_t raw, acc y_c) {
      const acc v = capped(raw);
      acc gc = formulas::exp_of(v - row_state.max) * row.p_scale;
      if (spread_terms) gc -= q_of(c, y_c) * row.q_scale;
      if (!kProb && c == t) gc -= row.target_scale;
      if (cap > acc(0)) gc *= softcap_slope(v, cap);
      return gc;
    };
    const auto target_gradient = [&](int64_t c, scalar_t raw) {
      return formulas::cross_entropy_target_grad(weight(c), keep, row.lse, capped(raw),
                                                 row.q_scale);
    };
    if (a.vectorized) {
      const int64_t packs = C / kVec;
      for (int64_t base = lane; base < packs; base += int64_t{kGroup} * kBatch) {
        P p[kBatch], yp[kBatch];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int64_t k = base + int64_t{b} * kGroup;
          if (k < packs) {
            p[b] = a.cached ? reinterpret_cast<const P*>(cache)[k]
                            : reinterpret_cast<const P*>(x)[k];
            if constexpr (kProb) yp[b] = reinterpret_cast<const P*>(y)[k];
          }
        }
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int64_t k = base + int64_t{b} * kGroup;
          if (k >= packs) continue;
          P out;
#pragma unroll
          for (int j = 0; j < kVec; ++j) {
            out.v[j] = static_cast<scalar_t>(
                gradient(k * kVec + j, p[b].v[j], kProb ? static_cast<acc>(yp[b].v[j]) : acc(0)));
          }
          reinterpret_cast<P*>(g)[k] = out;
          if (gt) {
#pragma unroll
            for (int j = 0; j < kVec; ++j) {
              out.v[j] = static_cast<scalar_t>(target_gradient(k * kVec + j, p[b].v[j]));
            }
            reinterpret_cast<P*>(gt)[k] = out;
          }
        }
      }
    } else {
      for (int64_t c = lane; c < C; c += kGroup) {
        const scalar_t raw = a.cached ? cache[c] : x[c];
        g[c] = static_cast<scalar_t>(gradient(c, raw, kProb ? static_cast<acc>(y[c]) : acc(0)));
        if (gt) gt[c] = static_cast<scalar_t>(target_gradient(c, raw));
      }
    }
  }

  if (a.partials) write_block_sums<kBlock>(sums, a.partials + blockIdx.x * kPartials);
}

}  // namespace cross_entropy_detail
}  // namespace cuda
}  // namespace fusedloss

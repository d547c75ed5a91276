// CUDA row engine of the cross entropy (formulas: kernels/multiclass_loss.h; interface:
// engines/row_engines.h). A whole cross_entropy call is one launch for 'none', two for 'sum' (the
// rows, then one block that adds the per-block partial sums in a fixed order) and three for a
// class-index 'mean' (a one-block pass over the targets first: the denominators the gradient
// holds), with no host synchronization: a bad class index is recorded for a deferred error
// (deferred_errors.cuh) and makes its row NaN.
//
// A group of threads owns a row: 8 threads for C <= 64 (32 rows per block), a warp for C <= 2048,
// else a block of 512 threads. Sweep 1 reads the row once with 16-byte loads (when the rows are
// 16-byte aligned, four per thread in flight), keeping a running max and sum of exp per thread
// and the target sums; the group reduces them (fixed order: bitwise reproducible, no atomics).
// Sweep 2, only when a gradient is asked for, writes the gradient once. When a block's row fits
// in shared memory (two blocks per SM), sweep 1 keeps it there and sweep 2 reads it back: each
// logit comes from HBM once. Longer rows are read twice, with the rows in flight bounded to fit
// in L2, so that the second read finds them there.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <limits>

#include "cuda/deferred_errors.cuh"
#include "cuda/row_reduce.cuh"
#include "engines/row_engines.h"
#include "kernels/multiclass_loss.h"

namespace fusedloss {
namespace cuda {
namespace {

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

// At least 768 threads per SM (at most 80 registers a thread): memory latency needs them.
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

// The denominators of 'mean' with class-index targets, needed before the rows when the gradient
// holds them (or when z-loss and class weights give the two terms different ones): the summed
// target weights W and the non-ignored rows n. One block sums them in a fixed order (it reads
// only the targets) and writes the rows' gradient factors: {1/W, 1/n} when folded, else {1, W/n}.
template <typename scalar_t>
__global__ void __launch_bounds__(kBigGroup)
    mean_denominators(const int64_t* target, const scalar_t* weight, int64_t rows, int64_t C,
                      int64_t ignore_index, bool fold, acc_t<scalar_t>* grad_scales) {
  double v[kPartials] = {0, 0, 0, 0};
  for (int64_t r = threadIdx.x; r < rows; r += kBigGroup) {
    const int64_t t = target[r];
    if (t == ignore_index || t < 0 || t >= C) continue;
    v[2] += weight ? static_cast<double>(weight[t]) : 1.0;
    v[3] += 1.0;
  }
  __shared__ double sums[kPartials];
  write_block_sums<kBigGroup>(v, sums);
  __syncthreads();
  if (threadIdx.x == 0) {
    const double W = sums[2], n = sums[3];
    using acc = acc_t<scalar_t>;
    grad_scales[0] = fold ? static_cast<acc>(1.0 / W) : acc(1);
    grad_scales[1] = fold ? static_cast<acc>(1.0 / n) : static_cast<acc>(W / n);
  }
}

// Adds the per-block partial sums in a fixed order and writes the reduced loss, its z-loss part
// and the factor backward applies.
template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads)
    finish_reduction(const double* partials, int blocks, bool mean, bool folded, scalar_t* loss,
                     scalar_t* z_loss, acc_t<scalar_t>* backward_scale) {
  double v[kPartials] = {0, 0, 0, 0};
  for (int b = threadIdx.x; b < blocks; b += kRowThreads) {
#pragma unroll
    for (int k = 0; k < kPartials; ++k) v[k] += partials[b * kPartials + k];
  }
  __shared__ double sums[kPartials];
  write_block_sums<kRowThreads>(v, sums);
  __syncthreads();
  if (threadIdx.x != 0) return;
  const double L = sums[0], Z = sums[1], W = sums[2], n = sums[3];
  using acc = acc_t<scalar_t>;
  if (mean) {
    *loss = static_cast<scalar_t>(L / W + Z / n);  // 0 / 0 = NaN when all are ignored, as torch
    *z_loss = static_cast<scalar_t>(Z / n);
    // A zero W (every target ignored) gives 0: the gradient is 0 there, 0 * inf would be NaN.
    *backward_scale = folded ? acc(1) : (W == 0 ? acc(0) : static_cast<acc>(1.0 / W));
  } else {
    *loss = static_cast<scalar_t>(L + Z);
    *z_loss = static_cast<scalar_t>(Z);
    *backward_scale = acc(1);
  }
}

__global__ void __launch_bounds__(kRowThreads)
    find_bad_class_targets(const int64_t* target, int64_t rows, int64_t classes,
                           int64_t ignore_index, ErrorSink sink) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += stride) {
    const int64_t t = target[r];
    if (t != ignore_index && (t < 0 || t >= classes)) report_bad_value(sink, r, t);
  }
}

bool aligned16(const at::Tensor& t) {
  return !t.defined() || reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
}

template <typename scalar_t, int kGroup, int kBlock, bool kProb>
int launch_rows(Rows<scalar_t> a, const at::Tensor& logits, bool want_partials,
                at::Tensor& partials) {
  auto kernel = cross_entropy_rows<scalar_t, kGroup, kBlock, kProb>;
  const auto* props = at::cuda::getCurrentDeviceProperties();
  const int64_t row_bytes = a.num_classes * static_cast<int64_t>(sizeof(scalar_t));
  const auto occupancy = [&](size_t shared_bytes) {
    if (shared_bytes > (48 << 10)) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(shared_bytes)));
    }
    int blocks = 0;
    C10_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kBlock, shared_bytes));
    return blocks;
  };
  // A block's row is kept in shared memory when two such blocks still fit on an SM (one row at a
  // time per SM would leave the memory idle while it reduces). Otherwise the row is read twice,
  // and the rows in flight are bounded so that they fit in 3/4 of L2: the second read is a hit.
  a.cached = kGroup == kBlock &&
             row_bytes <= static_cast<int64_t>(props->sharedMemPerBlockOptin) - (4 << 10) &&
             occupancy(static_cast<size_t>(row_bytes)) >= 2;
  const size_t cache_bytes = a.cached ? static_cast<size_t>(row_bytes) : 0;
  int per_sm = occupancy(cache_bytes);
  if (kGroup == kBlock && !a.cached) {
    const int64_t l2_rows = std::max<int64_t>(1, int64_t{props->l2CacheSize} * 3 / 4 / row_bytes);
    per_sm = static_cast<int>(
        std::clamp<int64_t>(l2_rows / props->multiProcessorCount, 1, std::max(per_sm, 1)));
  }
  constexpr int kRowsPerBlock = kBlock / kGroup;
  const int64_t needed = (a.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  const int blocks = static_cast<int>(
      std::min<int64_t>(needed, static_cast<int64_t>(props->multiProcessorCount) *
                                    std::max(per_sm, 1)));
  if (want_partials) {
    partials = at::empty({blocks * kPartials}, logits.options().dtype(at::kDouble));
    a.partials = partials.mutable_data_ptr<double>();
  }
  kernel<<<blocks, kBlock, cache_bytes, at::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return blocks;
}

// Launches the rows kernel for the row width; returns its number of blocks.
template <typename scalar_t, bool kProb>
int launch_for_width(const Rows<scalar_t>& a, const at::Tensor& logits, bool want_partials,
                     at::Tensor& partials) {
  if (a.num_classes <= 64) {
    return launch_rows<scalar_t, 8, kRowThreads, kProb>(a, logits, want_partials, partials);
  }
  if (a.num_classes <= 2048) {
    return launch_rows<scalar_t, 32, kRowThreads, kProb>(a, logits, want_partials, partials);
  }
  return launch_rows<scalar_t, kBigGroup, kBigGroup, kProb>(a, logits, want_partials, partials);
}

template <typename scalar_t>
void run(const CrossEntropySpec& spec, const CrossEntropyOperands& o) {
  using acc = acc_t<scalar_t>;
  const bool whole = o.loss.defined();
  const bool reduced = whole && spec.reduction != at::Reduction::None;
  const bool mean = whole && spec.reduction == at::Reduction::Mean;
  const int64_t rows = o.logits.size(0), C = spec.num_classes;
  const auto data = [](const at::Tensor& t) {
    return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr;
  };
  const auto acc_data = [](const at::Tensor& t) {
    return t.defined() ? t.mutable_data_ptr<acc>() : nullptr;
  };
  // Rows mode: the op layer has checked the targets (record_bad_class_targets).
  const ErrorSink sink = whole && !spec.probability_targets && spec.check_target
                             ? error_sink(spec.op, BadValueKind::ClassIndex, C, spec.ignore_index)
                             : ErrorSink{};

  // 'mean': the gradient holds 1/denominators where it may (then backward has nothing to do for a
  // plain loss.backward(): its one kernel sees a factor of 1 and returns). Probability targets
  // divide by the row count, known here; class indices by sums over the targets, found first by a
  // one-block kernel that reads only them (a third launch, far cheaper than the pass over the
  // gradient it saves in backward).
  at::Tensor grad_scales = whole ? at::Tensor() : o.grad_scales;
  acc scale = 1, z_scale = 1;
  bool folded = false;
  if (mean && spec.probability_targets && spec.fold_mean && rows > 0) {
    scale = z_scale = static_cast<acc>(1.0 / static_cast<double>(rows));
    folded = true;
  } else if (mean && !spec.probability_targets &&
             (spec.fold_mean || (spec.z_loss != 0 && o.weight.defined()))) {
    grad_scales = at::empty({2}, o.logits.options().dtype(c10::CppTypeToScalarType<acc>::value));
    mean_denominators<scalar_t><<<1, kBigGroup, 0, at::cuda::getCurrentCUDAStream()>>>(
        o.target.const_data_ptr<int64_t>(),
        o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr, rows, C,
        spec.ignore_index, spec.fold_mean, grad_scales.mutable_data_ptr<acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    folded = spec.fold_mean;
  }

  Rows<scalar_t> a{};
  a.rows = rows;
  a.num_classes = C;
  a.row_offset = o.row_offset;
  a.logits = o.logits.const_data_ptr<scalar_t>();
  a.target_index = spec.probability_targets ? nullptr : o.target.const_data_ptr<int64_t>();
  a.target_prob = spec.probability_targets ? o.target.const_data_ptr<scalar_t>() : nullptr;
  a.weight = o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr;
  a.grad_scales = grad_scales.defined() ? grad_scales.const_data_ptr<acc>() : nullptr;
  a.scale = scale;
  a.z_scale = z_scale;
  a.row_loss = whole ? nullptr : acc_data(o.row_loss);
  a.row_z_loss = whole ? nullptr : acc_data(o.row_z_loss);
  a.loss_out = whole && !reduced ? data(o.loss) : nullptr;
  a.z_out = whole && !reduced ? data(o.z_loss) : nullptr;
  a.grad_input = data(o.grad_input);
  a.grad_target = data(o.grad_target);
  a.ignore_index = spec.ignore_index;
  a.smoothing = static_cast<acc>(spec.label_smoothing);
  a.z_loss = static_cast<acc>(spec.z_loss);
  a.cap = static_cast<acc>(spec.softcap);
  a.vectorized = (C * static_cast<int64_t>(sizeof(scalar_t))) % 16 == 0 && aligned16(o.logits) &&
                 aligned16(o.grad_input) &&
                 (!spec.probability_targets || (aligned16(o.target) && aligned16(o.grad_target)));
  a.sink = sink;

  at::Tensor partials;
  int blocks = 0;
  if (rows > 0) {
    blocks = spec.probability_targets
                 ? launch_for_width<scalar_t, true>(a, o.logits, reduced, partials)
                 : launch_for_width<scalar_t, false>(a, o.logits, reduced, partials);
  }
  if (reduced) {
    finish_reduction<scalar_t><<<1, kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        blocks > 0 ? partials.const_data_ptr<double>() : nullptr, blocks, mean, folded,
        data(o.loss), data(o.z_loss), acc_data(o.backward_scale));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  after_launch(sink);
}

}  // namespace

int64_t free_device_memory() {
  size_t free_bytes = 0, total_bytes = 0;
  C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<int64_t>(free_bytes);
}

void record_bad_class_targets(const char* op, const at::Tensor& target, int64_t classes,
                              int64_t ignore_index) {
  const int64_t rows = target.numel();
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(target.device());
  const ErrorSink sink = error_sink(op, BadValueKind::ClassIndex, classes, ignore_index);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int blocks =
      static_cast<int>(std::min<int64_t>(sms * 4, (rows + kRowThreads - 1) / kRowThreads));
  find_bad_class_targets<<<blocks, kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      target.const_data_ptr<int64_t>(), rows, classes, ignore_index, sink);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  after_launch(sink);
}

void cross_entropy_kernel(const CrossEntropySpec& spec, const CrossEntropyOperands& operands) {
  const c10::cuda::CUDAGuard guard(operands.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.logits.scalar_type(),
                                  "fusedloss_cross_entropy_cuda",
                                  [&] { run<scalar_t>(spec, operands); });
}

}  // namespace cuda
}  // namespace fusedloss

// CUDA row engine of the cross entropy (see kernels/multiclass_loss.h for the formulas).
//
// A group of threads owns a row: one warp when C <= 1024, else the whole block of 256 threads,
// so any C up to 2^31 works with no shared-memory or register limit. Sweep 1 reads the row
// once, keeping an online max and sum of exp per thread and the target sums; the group reduces
// them (fixed order: bitwise reproducible, no atomics). Sweep 2, only when a gradient is asked
// for, reads the row again and writes the gradient once.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "cuda/row_reduce.cuh"
#include "kernels/multiclass_loss.h"

namespace fusedloss {
namespace cuda {
namespace {

template <typename scalar_t>
struct Rows {
  using acc = acc_t<scalar_t>;
  int64_t rows, num_classes;
  const scalar_t* logits;
  const int64_t* target_index;
  const scalar_t* target_prob;
  const scalar_t* weight;  // nullptr: ones
  const acc* grad_scales;  // [loss term, z-loss term]
  acc* row_loss;
  acc* row_z_loss;  // nullptr when z_loss == 0
  scalar_t* grad_input;
  scalar_t* grad_target;
  int64_t ignore_index;
  acc smoothing, z_loss, cap;
};

template <typename scalar_t, int kGroup, bool kProb, bool kCap, bool kGrad>
__global__ void __launch_bounds__(kRowThreads) cross_entropy_rows(Rows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  using formulas::softcap_slope;
  using formulas::softcapped;
  __shared__ acc shared[kRowThreads / 32];
  constexpr int kRowsPerBlock = kRowThreads / kGroup;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kGroup;
  const int lane = threadIdx.x % kGroup;
  if (r >= a.rows) return;  // uniform over the group: a block group has one row per block
  const int64_t C = a.num_classes;
  const scalar_t* x = a.logits + r * C;
  const scalar_t* y = kProb ? a.target_prob + r * C : nullptr;
  const acc cap = a.cap;
  const acc spread = a.smoothing / static_cast<acc>(C);
  const acc keep = acc(1) - a.smoothing;
  const bool spread_terms = kProb || spread != acc(0);
  const auto weight = [&](int64_t c) { return a.weight ? static_cast<acc>(a.weight[c]) : acc(1); };
  const auto q_of = [&](int64_t c) {
    return formulas::cross_entropy_q<kProb>(weight(c), kProb ? static_cast<acc>(y[c]) : acc(0),
                                            keep, spread);
  };

  int64_t t = -1;
  acc hard = 0, target_logit = 0;
  if constexpr (!kProb) {
    t = a.target_index[r];
    const bool ignored = t == a.ignore_index;
    if (ignored || t < 0 || t >= C) {  // 0 for ignored; NaN (never out of bounds) for bad
      const acc v = ignored ? acc(0) : std::numeric_limits<acc>::quiet_NaN();
      if (lane == 0) {
        a.row_loss[r] = v;
        if (a.row_z_loss) a.row_z_loss[r] = v;
      }
      if constexpr (kGrad) {
        for (int64_t c = lane; c < C; c += kGroup)
          a.grad_input[r * C + c] = static_cast<scalar_t>(v);
      }
      return;
    }
    hard = keep * weight(t);
    target_logit = softcapped(static_cast<acc>(x[t]), cap);
  }

  formulas::SoftmaxState<acc> state;
  acc q_total = 0, q_dot_x = 0;
  for (int64_t c = lane; c < C; c += kGroup) {
    acc v = static_cast<acc>(x[c]);
    if constexpr (kCap) v = softcapped(v, cap);
    state.add(v);
    if (spread_terms) {  // without smoothing a class-index row has none: keeps 0 * -inf out
      const acc q = q_of(c);
      q_total += q;
      q_dot_x += q * v;
    }
  }
  const acc max = group_all_reduce<kGroup>(state.max, Max<acc>(), shared);
  // Each thread's sum rescaled to the row max (an empty part adds 0), then summed.
  const acc part = state.sum == acc(0) ? acc(0) : state.sum * formulas::exp_of(state.max - max);
  formulas::SoftmaxState<acc> row_state;
  row_state.max = max;
  row_state.sum = group_all_reduce<kGroup>(part, Plus<acc>(), shared);
  row_state.finish();
  q_total = group_all_reduce<kGroup>(q_total, Plus<acc>(), shared);
  q_dot_x = group_all_reduce<kGroup>(q_dot_x, Plus<acc>(), shared);
  const auto row =
      formulas::cross_entropy_row<acc>(row_state.max, row_state.sum, q_total, q_dot_x, hard,
                                       target_logit, a.z_loss, a.grad_scales[0], a.grad_scales[1]);
  if (lane == 0) {
    a.row_loss[r] = row.loss;
    if (a.row_z_loss) a.row_z_loss[r] = row.z_loss;
  }
  if constexpr (kGrad) {
    // The gradient may overwrite the logits in place (linear_cross_entropy): every lane must have
    // read x[t] above before the lane owning column t writes it. Shuffles do not order memory.
    if constexpr (kGroup == 32) __syncwarp();
    scalar_t* g = a.grad_input + r * C;
    scalar_t* gt = kProb && a.grad_target ? a.grad_target + r * C : nullptr;
    for (int64_t c = lane; c < C; c += kGroup) {
      const acc v = softcapped(static_cast<acc>(x[c]), cap);
      acc gc = formulas::exp_of(v - row_state.max) * row.p_scale;
      if (spread_terms) gc -= q_of(c) * row.q_scale;
      if (!kProb && c == t) gc -= row.target_scale;
      if constexpr (kCap) gc *= softcap_slope(v, cap);
      g[c] = static_cast<scalar_t>(gc);
      if (gt) {
        gt[c] = static_cast<scalar_t>(
            formulas::cross_entropy_target_grad(weight(c), keep, row.lse, v, row.q_scale));
      }
    }
  }
}

template <typename scalar_t, int kGroup, bool kProb, bool kCap>
void launch_rows(const Rows<scalar_t>& a, bool grad) {
  constexpr int kRowsPerBlock = kRowThreads / kGroup;
  const int64_t blocks = (a.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(),
              "fusedloss.cross_entropy: too many rows for one launch: ", a.rows);
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (grad) {
    cross_entropy_rows<scalar_t, kGroup, kProb, kCap, true>
        <<<static_cast<unsigned>(blocks), kRowThreads, 0, stream>>>(a);
  } else {
    cross_entropy_rows<scalar_t, kGroup, kProb, kCap, false>
        <<<static_cast<unsigned>(blocks), kRowThreads, 0, stream>>>(a);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, bool kProb, bool kCap>
void launch_for_width(const Rows<scalar_t>& a, bool grad) {
  if (a.num_classes <= 1024) {
    launch_rows<scalar_t, 32, kProb, kCap>(a, grad);
  } else {
    launch_rows<scalar_t, kRowThreads, kProb, kCap>(a, grad);
  }
}

template <typename scalar_t>
void run(const CrossEntropySpec& spec, const CrossEntropyOperands& o) {
  using acc = acc_t<scalar_t>;
  Rows<scalar_t> a{o.logits.size(0),
                   spec.num_classes,
                   o.logits.const_data_ptr<scalar_t>(),
                   spec.probability_targets ? nullptr : o.target.const_data_ptr<int64_t>(),
                   spec.probability_targets ? o.target.const_data_ptr<scalar_t>() : nullptr,
                   o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr,
                   o.grad_scales.const_data_ptr<acc>(),
                   o.row_loss.mutable_data_ptr<acc>(),
                   o.row_z_loss.defined() ? o.row_z_loss.mutable_data_ptr<acc>() : nullptr,
                   o.grad_input.defined() ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr,
                   o.grad_target.defined() ? o.grad_target.mutable_data_ptr<scalar_t>() : nullptr,
                   spec.ignore_index,
                   static_cast<acc>(spec.label_smoothing),
                   static_cast<acc>(spec.z_loss),
                   static_cast<acc>(spec.softcap)};
  const bool grad = o.grad_input.defined();
  const bool cap = spec.softcap > 0;
  if (spec.probability_targets) {
    cap ? launch_for_width<scalar_t, true, true>(a, grad)
        : launch_for_width<scalar_t, true, false>(a, grad);
  } else {
    cap ? launch_for_width<scalar_t, false, true>(a, grad)
        : launch_for_width<scalar_t, false, false>(a, grad);
  }
}

}  // namespace

void cross_entropy_kernel(const CrossEntropySpec& spec, const CrossEntropyOperands& operands) {
  const c10::cuda::CUDAGuard guard(operands.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.logits.scalar_type(),
                                  "fusedloss_cross_entropy_cuda",
                                  [&] { run<scalar_t>(spec, operands); });
}

}  // namespace cuda
}  // namespace fusedloss

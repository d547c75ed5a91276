// CUDA row engine of the multi-class hinge (multi_margin_loss): a warp (C <= 1024) or a block
// owns a row, reads it once and writes the per-row loss and, when asked, the gradient. The
// group's sums are reduced in a fixed order (no atomics). A target out of range is recorded for a
// deferred error (no synchronization) and makes its row NaN.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "cuda/deferred_errors.cuh"
#include "cuda/row_reduce.cuh"
#include "engines/row_engines.h"
#include "kernels/multiclass_loss.h"

namespace fusedloss {
namespace cuda {
namespace {

template <typename scalar_t>
struct MarginRows {
  using acc = acc_t<scalar_t>;
  int64_t rows, num_classes;
  const scalar_t* input;
  const int64_t* target;
  const scalar_t* weight;  // nullptr: ones
  acc* row_loss;
  scalar_t* grad_input;
  acc margin, grad_scale;
  ErrorSink sink;
};

template <typename scalar_t, int kGroup, bool kSquared, bool kGrad>
__global__ void __launch_bounds__(kRowThreads) multi_margin_rows(MarginRows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  __shared__ acc shared[kRowThreads / 32];
  constexpr int kRowsPerBlock = kRowThreads / kGroup;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kGroup;
  const int lane = threadIdx.x % kGroup;
  if (r >= a.rows) return;  // uniform over the group
  const int64_t C = a.num_classes;
  const scalar_t* x = a.input + r * C;
  const int64_t t = a.target[r];
  if (t < 0 || t >= C) {  // NaN, never an access out of bounds
    const acc nan = std::numeric_limits<acc>::quiet_NaN();
    if (lane == 0) {
      report_bad_value(a.sink, r, t);
      a.row_loss[r] = nan;
    }
    if constexpr (kGrad) {
      for (int64_t c = lane; c < C; c += kGroup) a.grad_input[r * C + c] = static_cast<scalar_t>(nan);
    }
    return;
  }
  const acc x_t = static_cast<acc>(x[t]);
  const acc w_over_c = (a.weight ? static_cast<acc>(a.weight[t]) : acc(1)) / static_cast<acc>(C);
  acc loss = 0, slope_sum = 0;
  for (int64_t c = lane; c < C; c += kGroup) {
    if (c == t) continue;
    const auto term =
        formulas::multi_margin_term(static_cast<acc>(x[c]), x_t, a.margin, kSquared, w_over_c);
    loss += term.value;
    slope_sum += term.slope;
    if constexpr (kGrad) a.grad_input[r * C + c] = static_cast<scalar_t>(term.slope * a.grad_scale);
  }
  loss = group_all_reduce<kGroup>(loss, Plus<acc>(), shared);
  if constexpr (kGrad) slope_sum = group_all_reduce<kGroup>(slope_sum, Plus<acc>(), shared);
  if (lane == 0) {
    a.row_loss[r] = loss;
    if constexpr (kGrad) a.grad_input[r * C + t] = static_cast<scalar_t>(-slope_sum * a.grad_scale);
  }
}

template <typename scalar_t, int kGroup, bool kSquared>
void launch_rows(const MarginRows<scalar_t>& a, bool grad) {
  constexpr int kRowsPerBlock = kRowThreads / kGroup;
  const int64_t blocks = (a.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(),
              "fusedloss.multi_margin_loss: too many rows for one launch: ", a.rows);
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (grad) {
    multi_margin_rows<scalar_t, kGroup, kSquared, true>
        <<<static_cast<unsigned>(blocks), kRowThreads, 0, stream>>>(a);
  } else {
    multi_margin_rows<scalar_t, kGroup, kSquared, false>
        <<<static_cast<unsigned>(blocks), kRowThreads, 0, stream>>>(a);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, bool kSquared>
void launch_for_width(const MarginRows<scalar_t>& a, bool grad) {
  if (a.num_classes <= 1024) {
    launch_rows<scalar_t, 32, kSquared>(a, grad);
  } else {
    launch_rows<scalar_t, kRowThreads, kSquared>(a, grad);
  }
}

template <typename scalar_t>
void run(const MultiMarginSpec& spec, const MultiMarginOperands& o) {
  using acc = acc_t<scalar_t>;
  MarginRows<scalar_t> a{
      o.input.size(0),
      o.input.size(1),
      o.input.const_data_ptr<scalar_t>(),
      o.target.const_data_ptr<int64_t>(),
      o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr,
      o.row_loss.mutable_data_ptr<acc>(),
      o.grad_input.defined() ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr,
      static_cast<acc>(spec.margin),
      static_cast<acc>(o.grad_scale),
      error_sink("multi_margin_loss", BadValueKind::MarginClassIndex, o.input.size(1))};
  const bool grad = o.grad_input.defined();
  spec.p == 2 ? launch_for_width<scalar_t, true>(a, grad)
              : launch_for_width<scalar_t, false>(a, grad);
  after_launch(a.sink);
}

}  // namespace

void multi_margin_kernel(const MultiMarginSpec& spec, const MultiMarginOperands& operands) {
  const c10::cuda::CUDAGuard guard(operands.input.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.input.scalar_type(),
                                  "fusedloss_multi_margin_cuda",
                                  [&] { run<scalar_t>(spec, operands); });
}

}  // namespace cuda
}  // namespace fusedloss

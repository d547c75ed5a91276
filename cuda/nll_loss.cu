// CUDA engine of nll_loss (interface: engines/row_engines.h; per-row math: kernels/nll_loss.h).
// Forward is one launch for 'none' and two otherwise: the rows (each thread reads its picked
// element, the target checked on the way for a deferred error, per-block float64 sums of the loss
// and the weights), then one block that adds the block sums in a fixed order. Backward is one
// launch writing the whole gradient once (zeros but the picked elements). No synchronization.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "cuda/deferred_errors.cuh"
#include "cuda/row_reduce.cuh"
#include "engines/row_engines.h"
#include "kernels/math.h"
#include "kernels/nll_loss.h"

namespace fusedloss {
namespace cuda {
namespace {

constexpr int kThreads = kRowThreads;

template <typename scalar_t>
struct NllRows {
  const scalar_t* input;
  const int64_t* target;
  const scalar_t* weight;  // or nullptr
  int64_t rows, classes, inner, ignore_index;
  scalar_t* loss;    // 'none': per row
  double* partials;  // reduced: (blocks, 2) sums of loss and weight
  ErrorSink sink;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) nll_rows(NllRows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  double loss_sum = 0, weight_sum = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; r < a.rows;
       r += stride) {
    const int64_t t = a.target[r];
    const acc w = nll_row_weight<acc>(t, a.weight, a.classes, a.ignore_index);
    if (!(w == w)) report_bad_value(a.sink, r, t);
    const acc picked =
        w == w && w != acc(0)
            ? static_cast<acc>(a.input[(r / a.inner * a.classes + t) * a.inner + r % a.inner])
            : acc(0);
    const acc loss = nll_row_loss(w, picked);
    if (a.loss != nullptr) {
      a.loss[r] = static_cast<scalar_t>(loss);
    } else {
      loss_sum += static_cast<double>(loss);
      weight_sum += static_cast<double>(w);
    }
  }
  if (a.partials == nullptr) return;
  __shared__ double shared[kThreads / 32];
  loss_sum = group_all_reduce<kThreads, kThreads>(loss_sum, Plus<double>{}, shared);
  weight_sum = group_all_reduce<kThreads, kThreads>(weight_sum, Plus<double>{}, shared);
  if (threadIdx.x == 0) {
    a.partials[2 * blockIdx.x] = loss_sum;
    a.partials[2 * blockIdx.x + 1] = weight_sum;
  }
}

// Adds the blocks' sums in a fixed order: the loss, and the total weight backward divides by.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    nll_finish(const double* partials, int blocks, bool mean, scalar_t* loss,
               acc_t<scalar_t>* total_weight) {
  double L = 0, W = 0;
  for (int b = threadIdx.x; b < blocks; b += kThreads) {
    L += partials[2 * b];
    W += partials[2 * b + 1];
  }
  __shared__ double shared[kThreads / 32];
  L = group_all_reduce<kThreads, kThreads>(L, Plus<double>{}, shared);
  W = group_all_reduce<kThreads, kThreads>(W, Plus<double>{}, shared);
  if (threadIdx.x != 0) return;
  *loss = static_cast<scalar_t>(mean ? L / W : L);  // 0 / 0 = NaN when all are ignored, as torch
  *total_weight = static_cast<acc_t<scalar_t>>(W);
}

// One thread per gradient element: the picked element of its row gets -w * g * scale, the others
// 0. Reads of target and weight repeat along a row and stay in cache.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    nll_backward(const scalar_t* grad_output, int64_t grad_output_stride, const int64_t* target,
                 const scalar_t* weight, const acc_t<scalar_t>* total_weight, bool none, bool mean,
                 int64_t classes, int64_t inner, int64_t ignore_index, int64_t numel,
                 scalar_t* grad) {
  using acc = acc_t<scalar_t>;
  const acc scale = nll_mean_scale(mean, none ? acc(1) : *total_weight);
  const acc g_all = none ? acc(0) : static_cast<acc>(*grad_output);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < numel;
       i += stride) {
    const int64_t o = i / (classes * inner), c = i / inner % classes, r = o * inner + i % inner;
    const int64_t t = target[r];
    acc value = acc(0);
    if (c == t) {
      const acc w = nll_row_weight<acc>(t, weight, classes, ignore_index);
      const acc g = none ? static_cast<acc>(grad_output[r * grad_output_stride]) : g_all;
      value = w == acc(0) ? acc(0) : -(w * g) * scale;
    }
    grad[i] = static_cast<scalar_t>(value);
  }
}

int grid_for(int64_t work) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(int64_t{sms} * 8, (work + kThreads - 1) / kThreads)));
}

template <typename scalar_t>
void forward(const NllSpec& spec, const NllOperands& o) {
  const bool reduced = spec.reduction != at::Reduction::None;
  NllRows<scalar_t> a{};
  a.input = o.input.const_data_ptr<scalar_t>();
  a.target = o.target.const_data_ptr<int64_t>();
  a.weight = o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr;
  a.rows = o.target.numel();
  a.classes = spec.num_classes;
  a.inner = spec.inner;
  a.ignore_index = spec.ignore_index;
  a.loss = reduced ? nullptr : o.loss.mutable_data_ptr<scalar_t>();
  a.sink = spec.check_target
               ? error_sink(spec.op, BadValueKind::ClassIndex, spec.num_classes, spec.ignore_index)
               : ErrorSink{};
  const int blocks = grid_for(a.rows);
  at::Tensor partials;
  if (reduced) {
    partials = at::empty({blocks * 2}, o.input.options().dtype(at::kDouble));
    a.partials = partials.mutable_data_ptr<double>();
  }
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (a.rows > 0 || reduced) {
    nll_rows<scalar_t><<<blocks, kThreads, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (reduced) {
    nll_finish<scalar_t><<<1, kThreads, 0, stream>>>(
        a.partials, blocks, spec.reduction == at::Reduction::Mean,
        o.loss.mutable_data_ptr<scalar_t>(), o.total_weight.mutable_data_ptr<acc_t<scalar_t>>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  after_launch(a.sink);
}

template <typename scalar_t>
void backward(const NllSpec& spec, const NllBackwardOperands& o) {
  const int64_t numel = o.grad_input.numel();
  if (numel == 0) return;
  const bool none = spec.reduction == at::Reduction::None;
  nll_backward<scalar_t><<<grid_for(numel), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      o.grad_output.const_data_ptr<scalar_t>(), o.grad_output_stride,
      o.target.const_data_ptr<int64_t>(),
      o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr,
      none ? nullptr : o.total_weight.const_data_ptr<acc_t<scalar_t>>(), none,
      spec.reduction == at::Reduction::Mean, spec.num_classes, spec.inner, spec.ignore_index, numel,
      o.grad_input.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void nll_loss_kernel(const NllSpec& spec, const NllOperands& operands) {
  const c10::cuda::CUDAGuard guard(operands.input.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.input.scalar_type(),
                                  "fusedloss_nll_loss_cuda",
                                  [&] { forward<scalar_t>(spec, operands); });
}

void nll_loss_backward_kernel(const NllSpec& spec, const NllBackwardOperands& operands) {
  const c10::cuda::CUDAGuard guard(operands.grad_input.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.grad_input.scalar_type(),
                                  "fusedloss_nll_loss_backward_cuda",
                                  [&] { backward<scalar_t>(spec, operands); });
}

}  // namespace cuda
}  // namespace fusedloss

// CUDA engine of linear_log_probs (interface: engines/row_engines.h; math: kernels/log_probs.h):
// a block owns a row of logits. Forward: the maximum, then both sums in one sweep. Backward: one
// sweep writing each logit's gradient over the logit. Every sum is reduced in a fixed order: no
// atomics, no synchronization with the host.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "cuda/row_reduce.cuh"
#include "engines/row_engines.h"
#include "kernels/log_probs.h"

namespace fusedloss {
namespace cuda {
namespace {

template <typename scalar_t>
struct LogProbsRows {
  using acc = acc_t<scalar_t>;
  int64_t classes, ignore_index;
  const scalar_t* logits;
  scalar_t* grad;  // backward only (may alias logits)
  const int64_t* target;
  acc *log_probs, *entropy, *lse;              // forward writes, backward reads the last two
  const acc *grad_log_probs, *grad_entropy;  // backward; nullptr: zero
  acc inv_t;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads) log_probs_rows(LogProbsRows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  __shared__ acc shared[kRowThreads / 32];
  const int64_t r = blockIdx.x, V = a.classes, t = a.target[r];
  if (t == a.ignore_index) {
    if (threadIdx.x == 0) a.log_probs[r] = a.entropy[r] = a.lse[r] = acc(0);
    return;
  }
  const scalar_t* z = a.logits + r * V;
  acc top = -std::numeric_limits<acc>::infinity();
  for (int64_t j = threadIdx.x; j < V; j += kRowThreads) {
    top = fmax(top, static_cast<acc>(z[j]) * a.inv_t);
  }
  top = group_all_reduce<kRowThreads>(top, Max<acc>{}, shared);
  acc sum_exp = 0, sum_weighted = 0;
  for (int64_t j = threadIdx.x; j < V; j += kRowThreads) {
    const acc shifted = static_cast<acc>(z[j]) * a.inv_t - top;
    sum_exp += formulas::exp_of(shifted);
    sum_weighted += weighted_shift(shifted);
  }
  sum_exp = group_all_reduce<kRowThreads>(sum_exp, Plus<acc>{}, shared);
  sum_weighted = group_all_reduce<kRowThreads>(sum_weighted, Plus<acc>{}, shared);
  if (threadIdx.x != 0) return;
  const acc lse = top + formulas::log_of(sum_exp);
  a.lse[r] = lse;
  a.entropy[r] = entropy_of(sum_exp, sum_weighted);
  // A bad target (recorded for a deferred error by the op layer) reads nothing: NaN.
  a.log_probs[r] = (t < 0 || t >= V) ? std::numeric_limits<acc>::quiet_NaN()
                                     : static_cast<acc>(z[t]) * a.inv_t - lse;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads) log_probs_backward_rows(LogProbsRows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  const int64_t r = blockIdx.x, V = a.classes, t = a.target[r];
  const scalar_t* z = a.logits + r * V;
  scalar_t* g = a.grad + r * V;
  if (t == a.ignore_index) {
    for (int64_t j = threadIdx.x; j < V; j += kRowThreads) g[j] = scalar_t(0);
    return;
  }
  const acc grad_lp = a.grad_log_probs != nullptr ? a.grad_log_probs[r] : acc(0);
  const acc grad_h = a.grad_entropy != nullptr ? a.grad_entropy[r] : acc(0);
  const acc weight = (t < 0 || t >= V) ? std::numeric_limits<acc>::quiet_NaN() : grad_lp;
  const acc h = a.entropy[r], lse = a.lse[r];
  for (int64_t j = threadIdx.x; j < V; j += kRowThreads) {
    const acc log_p = static_cast<acc>(z[j]) * a.inv_t - lse;
    g[j] = static_cast<scalar_t>(log_probs_grad(log_p, j == t, weight, grad_h, h) * a.inv_t);
  }
}

template <typename scalar_t>
LogProbsRows<scalar_t> rows_of(const LogProbsSpec& spec, const LogProbsOperands& o) {
  using acc = acc_t<scalar_t>;
  const auto optional = [](const at::Tensor& t) {
    return t.defined() ? t.const_data_ptr<acc>() : nullptr;
  };
  LogProbsRows<scalar_t> a{};
  a.classes = o.logits.size(1);
  a.ignore_index = spec.ignore_index;
  a.logits = o.logits.const_data_ptr<scalar_t>();
  a.grad = o.grad_input.defined() ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr;
  a.target = o.target.const_data_ptr<int64_t>();
  a.log_probs = o.log_probs.defined() ? o.log_probs.mutable_data_ptr<acc>() : nullptr;
  a.entropy = o.entropy.mutable_data_ptr<acc>();
  a.lse = o.log_sum_exp.mutable_data_ptr<acc>();
  a.grad_log_probs = optional(o.grad_log_probs);
  a.grad_entropy = optional(o.grad_entropy);
  a.inv_t = static_cast<acc>(1.0 / spec.temperature);
  return a;
}

}  // namespace

void log_probs_kernel(const LogProbsSpec& spec, const LogProbsOperands& o) {
  const int64_t rows = o.logits.size(0);
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(o.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.logits.scalar_type(), "fusedloss_log_probs_cuda", [&] {
        log_probs_rows<scalar_t><<<static_cast<unsigned>(rows), kRowThreads, 0,
                                   at::cuda::getCurrentCUDAStream()>>>(rows_of<scalar_t>(spec, o));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

void log_probs_backward_kernel(const LogProbsSpec& spec, const LogProbsOperands& o) {
  const int64_t rows = o.logits.size(0);
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(o.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.logits.scalar_type(), "fusedloss_log_probs_backward_cuda", [&] {
        log_probs_backward_rows<scalar_t>
            <<<static_cast<unsigned>(rows), kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
                rows_of<scalar_t>(spec, o));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace cuda
}  // namespace fusedloss

// CUDA kernels of the vocab-parallel cross entropy's local work (interface: engines/vocab_shard.h):
// a block owns a row of the rank's shard. Statistics: the max, then the sum of exponentials and
// the label-smoothing sum, each reduced in a fixed order (no atomics); gradient: one read, one
// write per logit. No synchronization with the host.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "cuda/row_reduce.cuh"
#include "engines/vocab_shard.h"
#include "kernels/vocab_shard.h"

namespace fusedloss {
namespace cuda {
namespace {

// kCap false passes cap 0 to the formulas (kernels/vocab_shard.h): the softcap compiles away.
template <typename scalar_t, bool kCap, bool kSmooth>
__global__ void __launch_bounds__(kRowThreads)
    shard_stats(const scalar_t* logits, const int64_t* target, const acc_t<scalar_t>* q,
                int64_t C, acc_t<scalar_t> cap_in, acc_t<scalar_t>* out) {
  using acc = acc_t<scalar_t>;
  __shared__ acc shared[kRowThreads / 32];
  const acc cap = kCap ? cap_in : acc(0);
  const int64_t r = blockIdx.x;
  const scalar_t* x = logits + r * C;
  acc top = -std::numeric_limits<acc>::infinity();
  for (int64_t i = threadIdx.x; i < C; i += kRowThreads) {
    top = Max<acc>{}(top, formulas::softcapped(static_cast<acc>(x[i]), cap));
  }
  top = group_all_reduce<kRowThreads>(top, Max<acc>{}, shared);
  const acc shift = formulas::vocab_shard_shift(top);
  acc sum = 0, q_dot_x = 0;
  for (int64_t i = threadIdx.x; i < C; i += kRowThreads) {
    const acc v = formulas::softcapped(static_cast<acc>(x[i]), cap);
    sum += formulas::exp_of(v - shift);
    if constexpr (kSmooth) q_dot_x += q[i] * v;
  }
  sum = group_all_reduce<kRowThreads>(sum, Plus<acc>{}, shared);
  if constexpr (kSmooth) q_dot_x = group_all_reduce<kRowThreads>(q_dot_x, Plus<acc>{}, shared);
  if (threadIdx.x == 0) {
    const int64_t t = target[r];
    acc* row = out + r * 4;
    row[0] = top;
    row[1] = sum;
    row[2] = t >= 0 && t < C ? formulas::softcapped(static_cast<acc>(x[t]), cap) : acc(0);
    row[3] = q_dot_x;
  }
}

template <typename scalar_t>
struct GradientRows {
  using acc = acc_t<scalar_t>;
  const scalar_t* logits;
  const int64_t* target;
  const acc* q;
  int64_t classes;
  acc cap;
  const acc *lse, *p_scale, *q_scale, *t_scale;
  scalar_t* grad;
};

template <typename scalar_t, bool kCap, bool kSmooth>
__global__ void __launch_bounds__(kRowThreads) shard_gradient(GradientRows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  const int64_t r = blockIdx.x, C = a.classes, t = a.target[r];
  const acc cap = kCap ? a.cap : acc(0);
  const scalar_t* x = a.logits + r * C;
  scalar_t* g = a.grad + r * C;
  const acc m = a.lse[r], P = a.p_scale[r], Q = kSmooth ? a.q_scale[r] : acc(0), T = a.t_scale[r];
  for (int64_t i = threadIdx.x; i < C; i += kRowThreads) {
    const acc q_term = kSmooth ? a.q[i] * Q : acc(0);
    g[i] = static_cast<scalar_t>(formulas::vocab_shard_gradient(
        static_cast<acc>(x[i]), cap, m, P, i == t ? T : acc(0), q_term));
  }
}

}  // namespace

at::Tensor vocab_shard_stats_kernel(const VocabShardOperands& o) {
  const c10::cuda::CUDAGuard guard(o.logits.device());
  const int64_t N = o.logits.size(0), C = o.logits.size(1);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.logits.scalar_type(), "fusedloss_vocab_shard_stats_cuda", [&] {
        using acc = acc_t<scalar_t>;
        out = at::empty({N, 4}, o.logits.options().dtype(c10::CppTypeToScalarType<acc>::value));
        if (N == 0) return;
        const acc* q = o.smoothing.defined() ? o.smoothing.const_data_ptr<acc>() : nullptr;
        const auto stream = at::cuda::getCurrentCUDAStream();
        formulas::with_shard_flags(o.softcap > 0, q != nullptr, [&](auto kCap, auto kSmooth) {
          shard_stats<scalar_t, decltype(kCap)::value, decltype(kSmooth)::value>
              <<<N, kRowThreads, 0, stream>>>(o.logits.const_data_ptr<scalar_t>(),
                                               o.target.const_data_ptr<int64_t>(), q, C,
                                               static_cast<acc>(o.softcap),
                                               out.mutable_data_ptr<acc>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
  return out;
}

at::Tensor vocab_shard_gradient_kernel(const VocabShardOperands& o, const at::Tensor& lse,
                                       const at::Tensor& p_scale, const at::Tensor& q_scale,
                                       const at::Tensor& target_scale) {
  const c10::cuda::CUDAGuard guard(o.logits.device());
  const int64_t N = o.logits.size(0), C = o.logits.size(1);
  at::Tensor grad = at::empty({N, C}, o.logits.options());
  if (N == 0) return grad;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.logits.scalar_type(), "fusedloss_vocab_shard_gradient_cuda",
      [&] {
        using acc = acc_t<scalar_t>;
        GradientRows<scalar_t> a{o.logits.const_data_ptr<scalar_t>(),
                                 o.target.const_data_ptr<int64_t>(),
                                 o.smoothing.defined() ? o.smoothing.const_data_ptr<acc>() : nullptr,
                                 C,
                                 static_cast<acc>(o.softcap),
                                 lse.const_data_ptr<acc>(),
                                 p_scale.const_data_ptr<acc>(),
                                 q_scale.const_data_ptr<acc>(),
                                 target_scale.const_data_ptr<acc>(),
                                 grad.mutable_data_ptr<scalar_t>()};
        const auto stream = at::cuda::getCurrentCUDAStream();
        formulas::with_shard_flags(o.softcap > 0, a.q != nullptr, [&](auto kCap, auto kSmooth) {
          shard_gradient<scalar_t, decltype(kCap)::value, decltype(kSmooth)::value>
              <<<N, kRowThreads, 0, stream>>>(a);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
  return grad;
}

}  // namespace cuda
}  // namespace fusedloss

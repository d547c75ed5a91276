// CUDA kernel of the backward scale (see engines/scale_gradient.h): one launch, the two factors
// read from device memory (no synchronization), 16-byte loads and stores where aligned; nothing
// is read or written when their product is 1.

#include "engines/scale_gradient.h"

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "kernels/math.h"

namespace fusedloss {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads)
    scale_in_place(scalar_t* __restrict__ g, int64_t n, const scalar_t* __restrict__ grad_output,
                   const acc_t<scalar_t>* __restrict__ scale) {
  using acc = acc_t<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  const acc factor = static_cast<acc>(*grad_output) * *scale;
  if (factor == acc(1)) return;  // a plain loss.backward() of a folded 'mean' or a 'sum'
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t packs = n / kVec;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < packs;
       q += stride) {
    P p = reinterpret_cast<P*>(g)[q];
#pragma unroll
    for (int j = 0; j < kVec; ++j) p.v[j] = static_cast<scalar_t>(static_cast<acc>(p.v[j]) * factor);
    reinterpret_cast<P*>(g)[q] = p;
  }
  for (int64_t i = packs * kVec + threadIdx.x; blockIdx.x == 0 && i < n; i += blockDim.x) {
    g[i] = static_cast<scalar_t>(static_cast<acc>(g[i]) * factor);
  }
}

}  // namespace

void scale_gradient_kernel(const at::Tensor& gradient, const at::Tensor& grad_output,
                           const at::Tensor& scale) {
  const c10::cuda::CUDAGuard guard(gradient.device());
  const int64_t n = gradient.numel();
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, gradient.scalar_type(), "fusedloss_scale_gradient_cuda", [&] {
        using acc = acc_t<scalar_t>;
        constexpr int kVec = 16 / sizeof(scalar_t);
        scalar_t* g = gradient.mutable_data_ptr<scalar_t>();
        const bool aligned = reinterpret_cast<uintptr_t>(g) % 16 == 0;
        const int64_t work = aligned ? (n + kVec - 1) / kVec : n;
        const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
        const int blocks = static_cast<int>(
            std::max<int64_t>(1, std::min<int64_t>(sms * 4, (work + kThreads - 1) / kThreads)));
        const auto stream = at::cuda::getCurrentCUDAStream();
        const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
        const acc* s = scale.const_data_ptr<acc>();
        if (aligned) {
          scale_in_place<scalar_t, kVec><<<blocks, kThreads, 0, stream>>>(g, n, go, s);
        } else {
          scale_in_place<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(g, n, go, s);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace cuda
}  // namespace fusedloss

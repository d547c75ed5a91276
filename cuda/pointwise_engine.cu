// CUDA pointwise engine: a grid-stride pass with 16-byte vector loads computes the loss (per
// element, or per-block partial sums) and, when asked, the gradient; a one-block kernel adds the
// partial sums in a fixed order. No atomics, so the result is bitwise reproducible on a device.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/block_reduce.cuh"
#include "kernels/pointwise_loss.h"

namespace fusedloss {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerSM = 4;

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// kVec elements per load: 16 bytes when every pointer is 16-byte aligned, else 1.
template <typename scalar_t, int kVec, typename Formula, bool kReduce, bool kGrad>
__global__ void __launch_bounds__(kThreads)
    pointwise_loss_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ t,
                          scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t n,
                          Formula formula, acc_t<scalar_t> grad_scale,
                          double* __restrict__ block_sums) {
  using acc = acc_t<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  acc sum = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t num_packs = n / kVec;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < num_packs;
       p += stride) {
    const P xp = reinterpret_cast<const P*>(x)[p];
    const P tp = reinterpret_cast<const P*>(t)[p];
    P lp, gp;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const acc d = static_cast<acc>(xp.v[j]) - static_cast<acc>(tp.v[j]);
      const acc value = formula.value(d);
      if constexpr (kReduce) {
        sum += value;
      } else {
        lp.v[j] = static_cast<scalar_t>(value);
      }
      if constexpr (kGrad) gp.v[j] = static_cast<scalar_t>(formula.derivative(d) * grad_scale);
    }
    if constexpr (!kReduce) reinterpret_cast<P*>(loss)[p] = lp;
    if constexpr (kGrad) reinterpret_cast<P*>(grad)[p] = gp;
  }
  // The n % kVec tail, one element per thread of the first block.
  for (int64_t i = num_packs * kVec + threadIdx.x; blockIdx.x == 0 && i < n; i += blockDim.x) {
    const acc d = static_cast<acc>(x[i]) - static_cast<acc>(t[i]);
    const acc value = formula.value(d);
    if constexpr (kReduce) {
      sum += value;
    } else {
      loss[i] = static_cast<scalar_t>(value);
    }
    if constexpr (kGrad) grad[i] = static_cast<scalar_t>(formula.derivative(d) * grad_scale);
  }
  if constexpr (kReduce) {
    const double block_sum = block_reduce_sum<kThreads>(static_cast<double>(sum));
    if (threadIdx.x == 0) block_sums[blockIdx.x] = block_sum;
  }
}

// Adds the per-block sums in a fixed order and writes sum / divisor.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    finish_sum_kernel(const double* __restrict__ block_sums, int num_blocks, double divisor,
                      scalar_t* __restrict__ out) {
  double sum = 0;
  for (int i = threadIdx.x; i < num_blocks; i += blockDim.x) sum += block_sums[i];
  sum = block_reduce_sum<kThreads>(sum);
  if (threadIdx.x == 0) *out = static_cast<scalar_t>(sum / divisor);
}

bool is_aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

template <typename scalar_t, int kVec, typename Formula, bool kReduce, bool kGrad>
void launch_main(const scalar_t* x, const scalar_t* t, scalar_t* loss, scalar_t* grad, int64_t n,
                 Formula formula, acc_t<scalar_t> grad_scale, double* block_sums, int blocks,
                 cudaStream_t stream) {
  pointwise_loss_kernel<scalar_t, kVec, Formula, kReduce, kGrad>
      <<<blocks, kThreads, 0, stream>>>(x, t, loss, grad, n, formula, grad_scale, block_sums);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int kVec, typename Formula>
void launch_vec(const PointwiseLossSpec& spec, const at::Tensor& input, const at::Tensor& target,
                const at::Tensor& loss, const at::Tensor& grad, Formula formula) {
  const int64_t n = input.numel();
  const bool reduce = spec.reduction != at::Reduction::None;
  const scalar_t* x = input.const_data_ptr<scalar_t>();
  const scalar_t* t = target.const_data_ptr<scalar_t>();
  scalar_t* g = grad.defined() ? grad.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* l = reduce ? nullptr : loss.mutable_data_ptr<scalar_t>();

  const int64_t work = std::max<int64_t>(1, (n + kVec - 1) / kVec);
  const int max_blocks = at::cuda::getCurrentDeviceProperties()->multiProcessorCount * kBlocksPerSM;
  const int blocks = static_cast<int>(std::min<int64_t>(max_blocks, (work + kThreads - 1) / kThreads));
  auto stream = at::cuda::getCurrentCUDAStream();
  const auto scale = static_cast<acc_t<scalar_t>>(spec.grad_scale);

  at::Tensor block_sums;
  double* sums = nullptr;
  if (reduce) {
    block_sums = at::empty({blocks}, input.options().dtype(at::kDouble));
    sums = block_sums.mutable_data_ptr<double>();
  }
  if (reduce) {
    g ? launch_main<scalar_t, kVec, Formula, true, true>(x, t, l, g, n, formula, scale, sums, blocks, stream)
      : launch_main<scalar_t, kVec, Formula, true, false>(x, t, l, g, n, formula, scale, sums, blocks, stream);
    const double divisor = spec.reduction == at::Reduction::Mean ? static_cast<double>(n) : 1.0;
    finish_sum_kernel<scalar_t><<<1, kThreads, 0, stream>>>(sums, blocks, divisor,
                                                            loss.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    g ? launch_main<scalar_t, kVec, Formula, false, true>(x, t, l, g, n, formula, scale, sums, blocks, stream)
      : launch_main<scalar_t, kVec, Formula, false, false>(x, t, l, g, n, formula, scale, sums, blocks, stream);
  }
}

}  // namespace

void pointwise_loss_kernel(const PointwiseLossSpec& spec, const at::Tensor& input,
                           const at::Tensor& target, const at::Tensor& loss,
                           const at::Tensor& grad) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  if (input.numel() == 0) {
    // Nothing to read; the sum of nothing is 0 and its mean NaN, as torch.
    if (spec.reduction != at::Reduction::None) {
      loss.fill_(spec.reduction == at::Reduction::Mean ? std::numeric_limits<double>::quiet_NaN()
                                                       : 0.0);
    }
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "fusedloss_pointwise_loss_cuda", [&] {
        constexpr int kVec = 16 / sizeof(scalar_t);
        const bool vectorizable =
            is_aligned(input.const_data_ptr(), 16) && is_aligned(target.const_data_ptr(), 16) &&
            (!grad.defined() || is_aligned(grad.const_data_ptr(), 16)) &&
            is_aligned(loss.const_data_ptr(), 16);
        visit_formula<acc_t<scalar_t>>(spec, [&](auto formula) {
          if (vectorizable) {
            launch_vec<scalar_t, kVec>(spec, input, target, loss, grad, formula);
          } else {
            launch_vec<scalar_t, 1>(spec, input, target, loss, grad, formula);
          }
        });
      });
}

}  // namespace cuda
}  // namespace fusedloss

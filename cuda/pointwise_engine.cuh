#pragma once
// CUDA pointwise engine: a grid-stride pass with 16-byte vector loads of input and target computes
// the loss (per element, or per-block partial sums) and, when asked, the gradients; a one-block
// kernel adds the partial sums in a fixed order (and writes the backward scale). No float atomics,
// so results are bitwise reproducible on a device. Elements a formula rejects are recorded for a
// deferred error, never read back (no synchronization). Each family's .cu file instantiates it for
// its formulas.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "cuda/block_reduce.cuh"
#include "cuda/deferred_errors.cuh"
#include "engines/pointwise_engine.h"

namespace fusedloss {
namespace cuda {
namespace engine {

constexpr int kThreads = 256;
constexpr int kBlocksPerSM = 4;

using ::fusedloss::acc_t;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename scalar_t>
struct Arrays {
  const scalar_t* x;
  const scalar_t* t;
  const scalar_t* w;   // nullptr: 1
  const scalar_t* pw;  // nullptr: 1
  int64_t w_period, pw_period;
  scalar_t* loss;
  scalar_t* grad_input;
  scalar_t* grad_target;
};

// The elements a validating formula rejected in one thread's part: how many, and the first.
struct Rejected {
  unsigned count = 0;
  int64_t first = -1;
  double value = 0;  // the rejected value (input for BCE, target for hinge)
};

// One element i: loss (added to sum or stored), gradients, validity.
template <typename scalar_t, typename Formula, bool kReduce, bool kGradInput, bool kGradTarget>
__device__ __forceinline__ void element(const Arrays<scalar_t>& a, int64_t i, scalar_t x_raw,
                                        scalar_t t_raw, Formula formula, acc_t<scalar_t> grad_scale,
                                        double& sum, Rejected& rejected, scalar_t& loss_out,
                                        scalar_t& grad_input_out, scalar_t& grad_target_out) {
  using acc = acc_t<scalar_t>;
  const acc x = static_cast<acc>(x_raw), t = static_cast<acc>(t_raw);
  const acc w = a.w ? static_cast<acc>(a.w[i % a.w_period]) : acc(1);
  const acc p = a.pw ? static_cast<acc>(a.pw[i % a.pw_period]) : acc(1);
  if constexpr (validates_elements<Formula, acc>) {
    if (!formula.valid(x, t)) {
      if (rejected.count++ == 0) {
        rejected.first = i;
        rejected.value = static_cast<double>(Formula::kChecksTarget ? t : x);
      }
    }
  }
  const acc value = formula.value(x, t, w, p);
  if constexpr (kReduce) {
    sum += static_cast<double>(value);
  } else {
    loss_out = static_cast<scalar_t>(value);
  }
  if constexpr (kGradInput) {
    grad_input_out = static_cast<scalar_t>(formula.grad_input(x, t, w, p) * grad_scale);
  }
  if constexpr (kGradTarget) {
    grad_target_out = static_cast<scalar_t>(formula.grad_target(x, t, w, p) * grad_scale);
  }
}

// kVec elements per load: 16 bytes when every array is 16-byte aligned, else 1.
template <typename scalar_t, int kVec, typename Formula, bool kReduce, bool kGradInput,
          bool kGradTarget>
__global__ void __launch_bounds__(kThreads)
    pointwise_kernel(Arrays<scalar_t> a, int64_t n, Formula formula, acc_t<scalar_t> grad_scale,
                     double* __restrict__ block_sums, ErrorSink sink) {
  using P = Pack<scalar_t, kVec>;
  // Each thread adds thousands of elements: in double, as the CPU engine widens every 512.
  double sum = 0;
  Rejected rejected;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t num_packs = n / kVec;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < num_packs;
       q += stride) {
    const P xp = reinterpret_cast<const P*>(a.x)[q];
    const P tp = reinterpret_cast<const P*>(a.t)[q];
    P lp, gip, gtp;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      element<scalar_t, Formula, kReduce, kGradInput, kGradTarget>(
          a, q * kVec + j, xp.v[j], tp.v[j], formula, grad_scale, sum, rejected, lp.v[j],
          gip.v[j], gtp.v[j]);
    }
    if constexpr (!kReduce) reinterpret_cast<P*>(a.loss)[q] = lp;
    if constexpr (kGradInput) reinterpret_cast<P*>(a.grad_input)[q] = gip;
    if constexpr (kGradTarget) reinterpret_cast<P*>(a.grad_target)[q] = gtp;
  }
  // The n % kVec tail, in the first block.
  for (int64_t i = num_packs * kVec + threadIdx.x; blockIdx.x == 0 && i < n; i += blockDim.x) {
    scalar_t l, gi, gt;
    element<scalar_t, Formula, kReduce, kGradInput, kGradTarget>(
        a, i, a.x[i], a.t[i], formula, grad_scale, sum, rejected, l, gi, gt);
    if constexpr (!kReduce) a.loss[i] = l;
    if constexpr (kGradInput) a.grad_input[i] = gi;
    if constexpr (kGradTarget) a.grad_target[i] = gt;
  }
  if constexpr (kReduce) {
    const double block_sum = block_reduce_sum<kThreads>(sum);
    if (threadIdx.x == 0) block_sums[blockIdx.x] = block_sum;
  }
  if constexpr (validates_elements<Formula, acc_t<scalar_t>>) {
    if (rejected.count != 0) {
      int64_t bits;
      memcpy(&bits, &rejected.value, sizeof(bits));
      report_bad_value(sink, rejected.first, bits, rejected.count);
    }
  }
}

// Adds the per-block sums in a fixed order and writes sum / divisor, and the backward scale.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    finish_sum_kernel(const double* __restrict__ block_sums, int num_blocks, double divisor,
                      scalar_t* __restrict__ out, acc_t<scalar_t> backward_scale,
                      acc_t<scalar_t>* __restrict__ backward_scale_out) {
  double sum = 0;
  for (int i = threadIdx.x; i < num_blocks; i += blockDim.x) sum += block_sums[i];
  sum = block_reduce_sum<kThreads>(sum);
  if (threadIdx.x == 0) {
    *out = static_cast<scalar_t>(sum / divisor);
    *backward_scale_out = backward_scale;
  }
}

inline bool is_aligned(const at::Tensor& t) {
  return !t.defined() || reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
}

template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

template <typename scalar_t, int kVec, typename Formula, bool kReduce>
void launch_main(const Arrays<scalar_t>& a, int64_t n, Formula formula, acc_t<scalar_t> grad_scale,
                 double* sums, int blocks, cudaStream_t stream, const ErrorSink& sink) {
  if (a.grad_target) {
    if constexpr (has_target_gradient<Formula, acc_t<scalar_t>>) {
      pointwise_kernel<scalar_t, kVec, Formula, kReduce, true, true>
          <<<blocks, kThreads, 0, stream>>>(a, n, formula, grad_scale, sums, sink);
    } else {
      TORCH_INTERNAL_ASSERT(false, "fusedloss: this loss has no target gradient formula");
    }
  } else if (a.grad_input) {
    pointwise_kernel<scalar_t, kVec, Formula, kReduce, true, false>
        <<<blocks, kThreads, 0, stream>>>(a, n, formula, grad_scale, sums, sink);
  } else {
    pointwise_kernel<scalar_t, kVec, Formula, kReduce, false, false>
        <<<blocks, kThreads, 0, stream>>>(a, n, formula, grad_scale, sums, sink);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int kVec, typename Formula>
void launch(const PointwiseLossSpec& spec, const PointwiseOperands& o, Formula formula) {
  const int64_t n = o.input.numel();
  const bool reduce = spec.reduction != at::Reduction::None;
  Arrays<scalar_t> a{o.input.const_data_ptr<scalar_t>(),
                     o.target.const_data_ptr<scalar_t>(),
                     data_or_null<scalar_t>(o.weight),
                     data_or_null<scalar_t>(o.pos_weight),
                     o.weight.defined() ? o.weight.numel() : 1,
                     o.pos_weight.defined() ? o.pos_weight.numel() : 1,
                     reduce ? nullptr : o.loss.mutable_data_ptr<scalar_t>(),
                     o.grad_input.defined() ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr,
                     o.grad_target.defined() ? o.grad_target.mutable_data_ptr<scalar_t>() : nullptr};
  const int64_t work = (n + kVec - 1) / kVec;
  const int max_blocks = at::cuda::getCurrentDeviceProperties()->multiProcessorCount * kBlocksPerSM;
  const int blocks =
      static_cast<int>(std::min<int64_t>(max_blocks, (work + kThreads - 1) / kThreads));
  auto stream = at::cuda::getCurrentCUDAStream();
  const auto grad_scale = static_cast<acc_t<scalar_t>>(spec.grad_scale);
  const ErrorSink sink =
      spec.bad_kind != BadValueKind::None ? error_sink(spec.op, spec.bad_kind, n) : ErrorSink{};

  at::Tensor block_sums;
  double* sums = nullptr;
  if (reduce) {
    block_sums = at::empty({blocks}, o.input.options().dtype(at::kDouble));
    sums = block_sums.mutable_data_ptr<double>();
    launch_main<scalar_t, kVec, Formula, true>(a, n, formula, grad_scale, sums, blocks, stream,
                                               sink);
    const double divisor = spec.reduction == at::Reduction::Mean ? spec.mean_divisor : 1.0;
    finish_sum_kernel<scalar_t><<<1, kThreads, 0, stream>>>(
        sums, blocks, divisor, o.loss.mutable_data_ptr<scalar_t>(),
        static_cast<acc_t<scalar_t>>(spec.backward_scale),
        o.backward_scale.mutable_data_ptr<acc_t<scalar_t>>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    launch_main<scalar_t, kVec, Formula, false>(a, n, formula, grad_scale, sums, blocks, stream,
                                                sink);
  }
  after_launch(sink);
}

// The whole engine call for one family: device guard, dtype dispatch, the family's formula.
template <typename Visit>
void run_family(const PointwiseLossSpec& spec, const PointwiseOperands& o, Visit visit) {
  const c10::cuda::CUDAGuard device_guard(o.input.device());
  raise_finished_errors();  // what earlier calls recorded, at the next fusedloss call
  if (o.input.numel() == 0) {
    // Nothing to read; the sum of nothing is 0 and its mean 0 / 0 = NaN, as torch (0 / 5 = 0
    // for kl_div's 'batchmean' of a (5, 0) input).
    if (spec.reduction != at::Reduction::None) {
      o.loss.fill_(spec.reduction == at::Reduction::Mean ? 0.0 / spec.mean_divisor : 0.0);
      o.backward_scale.fill_(spec.backward_scale);
    }
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.input.scalar_type(), "fusedloss_pointwise_cuda", [&] {
        constexpr int kVec = 16 / sizeof(scalar_t);
        const bool vectorizable = is_aligned(o.input) && is_aligned(o.target) &&
                                  is_aligned(o.grad_input) && is_aligned(o.grad_target) &&
                                  (spec.reduction != at::Reduction::None || is_aligned(o.loss));
        visit.template operator()<acc_t<scalar_t>>(spec, [&](auto formula) {
          if (vectorizable) {
            launch<scalar_t, kVec>(spec, o, formula);
          } else {
            launch<scalar_t, 1>(spec, o, formula);
          }
        });
      });
}

}  // namespace engine
}  // namespace cuda
}  // namespace fusedloss

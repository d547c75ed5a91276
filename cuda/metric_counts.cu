// CUDA counting engine of the metrics. Classification: one thread per row, counts added with
// integer atomics (exact, so the result does not depend on their order) into a per-block table in
// shared memory when it is small, else straight into the output. Regression: each block computes
// float64 moments of its rows (Welford per thread, merged in a fixed order); the op layer merges
// the blocks. Nothing is read back to the host.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/metric_counts.h"

namespace fusedloss {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kSharedCounters = 2048;  // confusion + hits cells counted in shared memory
using Counter = unsigned long long;

template <typename scalar_t>
__device__ int64_t argmax(const scalar_t* x, int64_t classes) {
  int64_t best = 0;
  float best_value = static_cast<float>(x[0]);
  for (int64_t c = 1; c < classes && !isnan(best_value); ++c) {
    const float v = static_cast<float>(x[c]);
    if (v > best_value || isnan(v)) {
      best = c;
      best_value = v;
    }
  }
  return best;
}

template <typename scalar_t, bool kScores>
__global__ void __launch_bounds__(kThreads)
    classification_counts(ClassificationSpec spec, const scalar_t* scores, const int64_t* labels,
                          const int64_t* target, int64_t rows, Counter* confusion, Counter* hits,
                          Counter* invalid, Counter* outside, int64_t confusion_cells) {
  __shared__ Counter table[kSharedCounters];
  const int64_t C = spec.num_classes;
  const int64_t cells = confusion_cells + (spec.binary ? 0 : C);
  const bool shared = cells <= kSharedCounters;
  if (shared) {
    for (int64_t i = threadIdx.x; i < cells; i += blockDim.x) table[i] = 0;
    __syncthreads();
  }
  Counter* conf = shared ? table : confusion;
  Counter* hit = shared ? table + confusion_cells : hits;
  Counter my_invalid = 0, my_outside = 0;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = target[r];
    if (spec.has_ignore_index && t == spec.ignore_index) continue;
    if (t < 0 || t >= C) {
      ++my_invalid;
      continue;
    }
    int64_t predicted;
    if constexpr (!kScores) {
      predicted = labels[r];
      if (predicted < 0 || predicted >= C) {
        ++my_invalid;
        continue;
      }
    } else if (spec.binary) {
      const float x = static_cast<float>(scores[r]);
      my_outside += (x >= 0.f && x <= 1.f) ? 0 : 1;
      const float probability = 1.f / (1.f + expf(-x));
      atomicAdd(conf + t * 2 + (x > spec.threshold ? 1 : 0), Counter{1});
      atomicAdd(conf + 4 + t * 2 + (probability > spec.threshold ? 1 : 0), Counter{1});
      continue;
    } else {
      const scalar_t* x = scores + r * C;
      predicted = argmax(x, C);
      if (spec.top_k > 1) {
        const float target_score = static_cast<float>(x[t]);
        int64_t rank = 0;
        for (int64_t c = 0; c < C; ++c) {
          const float v = static_cast<float>(x[c]);
          rank += (v > target_score || (v == target_score && c < t)) ? 1 : 0;
        }
        if (rank < spec.top_k) atomicAdd(hit + t, Counter{1});
      }
    }
    atomicAdd(conf + t * C + predicted, Counter{1});
    if (spec.top_k == 1 && predicted == t) atomicAdd(hit + t, Counter{1});
  }
  if (my_invalid) atomicAdd(invalid, my_invalid);
  if (my_outside) atomicAdd(outside, my_outside);
  if (shared) {
    __syncthreads();
    for (int64_t i = threadIdx.x; i < cells; i += blockDim.x) {
      if (table[i] == 0) continue;
      atomicAdd(i < confusion_cells ? confusion + i : hits + (i - confusion_cells), table[i]);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    regression_moments(const scalar_t* preds, const scalar_t* target, int64_t rows, int64_t columns,
                       double* partials) {
  __shared__ double stats[kThreads][kMomentCount];
  for (int64_t d = 0; d < columns; ++d) {
    double n = 0, mean = 0, m2 = 0, sse = 0, sae = 0;
    for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
         r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const double y = static_cast<double>(target[r * columns + d]);
      const double err = y - static_cast<double>(preds[r * columns + d]);
      n += 1;
      const double delta = y - mean;
      mean += delta / n;
      m2 += delta * (y - mean);
      sse += err * err;
      sae += fabs(err);
    }
    stats[threadIdx.x][kCount] = n;
    stats[threadIdx.x][kTargetMean] = mean;
    stats[threadIdx.x][kTargetM2] = m2;
    stats[threadIdx.x][kSquaredError] = sse;
    stats[threadIdx.x][kAbsoluteError] = sae;
    __syncthreads();
    if (threadIdx.x == 0) {  // Chan's merge, in thread order
      double tn = 0, tmean = 0, tm2 = 0, tsse = 0, tsae = 0;
      for (int i = 0; i < kThreads; ++i) {
        const double bn = stats[i][kCount];
        if (bn == 0) continue;
        const double delta = stats[i][kTargetMean] - tmean;
        const double total = tn + bn;
        tmean += delta * bn / total;
        tm2 += stats[i][kTargetM2] + delta * delta * tn * bn / total;
        tn = total;
        tsse += stats[i][kSquaredError];
        tsae += stats[i][kAbsoluteError];
      }
      double* out = partials + (blockIdx.x * columns + d) * kMomentCount;
      out[kCount] = tn;
      out[kTargetMean] = tmean;
      out[kTargetM2] = tm2;
      out[kSquaredError] = tsse;
      out[kAbsoluteError] = tsae;
    }
    __syncthreads();
  }
}

int grid_for(int64_t rows) {
  const int64_t wanted = (rows + kThreads - 1) / kThreads;
  const int64_t cap =
      static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

}  // namespace

void classification_counts_kernel(const ClassificationSpec& spec, const ClassificationCounts& io) {
  const c10::cuda::CUDAGuard guard(io.target.device());
  const int64_t rows = io.target.numel();
  if (rows == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto counter = [](const at::Tensor& t) {
    return reinterpret_cast<Counter*>(t.mutable_data_ptr<int64_t>());
  };
  const auto launch = [&](auto scalar, const void* scores) {
    using scalar_t = decltype(scalar);
    constexpr bool kScores = !std::is_same_v<scalar_t, int64_t>;
    classification_counts<scalar_t, kScores><<<grid_for(rows), kThreads, 0, stream>>>(
        spec, static_cast<const scalar_t*>(scores),
        kScores ? nullptr : io.preds.const_data_ptr<int64_t>(), io.target.const_data_ptr<int64_t>(),
        rows, counter(io.confusion), counter(io.top_k_hits), counter(io.invalid),
        counter(io.outside_unit), io.confusion.numel());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (spec.preds == PredictionKind::Labels) {
    launch(int64_t{}, nullptr);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, io.preds.scalar_type(),
                                    "fusedloss_classification_counts_cuda",
                                    [&] { launch(scalar_t{}, io.preds.const_data_ptr()); });
  }
}

int64_t regression_partitions(int64_t rows) { return grid_for(rows); }

void regression_moments_kernel(const RegressionMoments& io) {
  const c10::cuda::CUDAGuard guard(io.preds.device());
  const int64_t rows = io.preds.size(0), columns = io.preds.size(1);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, io.preds.scalar_type(), "fusedloss_regression_moments_cuda", [&] {
        regression_moments<scalar_t>
            <<<static_cast<unsigned>(io.partials.size(0)), kThreads, 0, stream>>>(
                io.preds.const_data_ptr<scalar_t>(), io.target.const_data_ptr<scalar_t>(), rows,
                columns, io.partials.mutable_data_ptr<double>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace cuda
}  // namespace fusedloss

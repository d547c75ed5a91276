// CUDA engine of the binned threshold metrics (kernels/threshold_histogram.h): one launch per
// update. A block counts into a histogram in shared memory when the whole (C, 2, T + 1) state
// fits there, then adds it to the state; otherwise it counts straight into the state. Integer
// atomics only: exact and independent of the order. Whether the batch is logits is read on the
// device (the op layer's flag), never on the host.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "kernels/math.h"
#include "kernels/threshold_histogram.h"

namespace fusedloss {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kSharedEntries = 6144;  // 48 KiB of 8-byte counters

using Counter = unsigned long long;

template <typename scalar_t>
struct Args {
  const scalar_t* preds;
  const int64_t* target;
  const double* thresholds;
  int64_t thresholds_count, rows, classes;
  const bool* logits;
  bool has_ignore_index;
  int64_t ignore_index;
  Counter* histogram;  // (C, 2, T + 1)
  Counter* invalid;
};

template <bool kShared>
__device__ Counter* counters(Counter* state, Counter* shared) {
  return kShared ? shared : state;
}

template <bool kShared>
__device__ void start_block(Counter* shared, int64_t entries) {
  if constexpr (kShared) {
    for (int64_t i = threadIdx.x; i < entries; i += blockDim.x) shared[i] = 0;
    __syncthreads();
  }
}

template <bool kShared>
__device__ void finish_block(const Counter* shared, Counter* state, int64_t entries) {
  if constexpr (kShared) {
    __syncthreads();
    for (int64_t i = threadIdx.x; i < entries; i += blockDim.x) {
      if (shared[i] != 0) atomicAdd(state + i, shared[i]);
    }
  }
}

// Binary and multilabel: every element a score with its own 0/1 label.
template <typename scalar_t, bool kShared>
__global__ void __launch_bounds__(kThreads) element_histogram(Args<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  extern __shared__ Counter shared[];
  const int64_t bins = a.thresholds_count + 1, entries = a.classes * 2 * bins;
  start_block<kShared>(shared, entries);
  Counter* h = counters<kShared>(a.histogram, shared);
  const bool logits = *a.logits;
  Counter invalid = 0;
  const int64_t total = a.rows * a.classes;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = a.target[e];
    if (a.has_ignore_index && t == a.ignore_index) continue;
    if (t != 0 && t != 1) {
      ++invalid;
      continue;
    }
    const acc x = static_cast<acc>(a.preds[e]);
    const int64_t c = e % a.classes;
    const int64_t b = threshold_bin(logits ? formulas::sigmoid(x) : x, a.thresholds,
                                    a.thresholds_count);
    atomicAdd(h + (c * 2 + t) * bins + b, Counter{1});
  }
  if (invalid != 0) atomicAdd(a.invalid, invalid);
  finish_block<kShared>(shared, a.histogram, entries);
}

// Multiclass: a thread per row; each class is a one-vs-rest score (softmax first for logits).
template <typename scalar_t, bool kShared>
__global__ void __launch_bounds__(kThreads) row_histogram(Args<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  extern __shared__ Counter shared[];
  const int64_t bins = a.thresholds_count + 1, C = a.classes, entries = C * 2 * bins;
  start_block<kShared>(shared, entries);
  Counter* h = counters<kShared>(a.histogram, shared);
  const bool logits = *a.logits;
  Counter invalid = 0;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < a.rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = a.target[r];
    if (a.has_ignore_index && t == a.ignore_index) continue;
    if (t < 0 || t >= C) {
      ++invalid;
      continue;
    }
    const scalar_t* x = a.preds + r * C;
    acc top = 0, sum = 1;
    if (logits) {
      top = static_cast<acc>(x[0]);
      for (int64_t c = 1; c < C; ++c) top = fmax(top, static_cast<acc>(x[c]));
      sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += formulas::exp_of(static_cast<acc>(x[c]) - top);
    }
    for (int64_t c = 0; c < C; ++c) {
      const acc v = static_cast<acc>(x[c]);
      const acc score = logits ? formulas::exp_of(v - top) / sum : v;
      const int64_t b = threshold_bin(score, a.thresholds, a.thresholds_count);
      atomicAdd(h + (c * 2 + (c == t ? 1 : 0)) * bins + b, Counter{1});
    }
  }
  if (invalid != 0) atomicAdd(a.invalid, invalid);
  finish_block<kShared>(shared, a.histogram, entries);
}

template <typename scalar_t>
void launch(const ThresholdHistogramSpec& spec, const ThresholdHistogram& io) {
  Args<scalar_t> a{};
  a.preds = io.preds.const_data_ptr<scalar_t>();
  a.target = io.target.const_data_ptr<int64_t>();
  a.thresholds = io.thresholds.const_data_ptr<double>();
  a.thresholds_count = io.thresholds.numel();
  a.rows = io.target.size(0);
  a.classes = spec.num_classes;
  a.logits = io.logits.const_data_ptr<bool>();
  a.has_ignore_index = spec.has_ignore_index;
  a.ignore_index = spec.ignore_index;
  a.histogram = reinterpret_cast<Counter*>(io.histogram.mutable_data_ptr<int64_t>());
  a.invalid = reinterpret_cast<Counter*>(io.invalid.mutable_data_ptr<int64_t>());
  const bool multiclass = spec.task == ThresholdTask::Multiclass;
  const int64_t work = multiclass ? a.rows : a.rows * a.classes;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int blocks = static_cast<int>(
      std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, int64_t{4} * sms));
  const int64_t entries = io.histogram.numel();
  const bool shared = entries <= kSharedEntries;
  const size_t shared_bytes = shared ? static_cast<size_t>(entries) * sizeof(Counter) : 0;
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (multiclass) {
    shared ? row_histogram<scalar_t, true><<<blocks, kThreads, shared_bytes, stream>>>(a)
           : row_histogram<scalar_t, false><<<blocks, kThreads, 0, stream>>>(a);
  } else {
    shared ? element_histogram<scalar_t, true><<<blocks, kThreads, shared_bytes, stream>>>(a)
           : element_histogram<scalar_t, false><<<blocks, kThreads, 0, stream>>>(a);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void threshold_histogram_kernel(const ThresholdHistogramSpec& spec, const ThresholdHistogram& io) {
  if (io.target.size(0) == 0) return;
  const c10::cuda::CUDAGuard guard(io.preds.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, io.preds.scalar_type(),
                                  "fusedloss_threshold_histogram_cuda",
                                  [&] { launch<scalar_t>(spec, io); });
}

}  // namespace cuda
}  // namespace fusedloss

// CUDA row engine of the cross entropy (formulas: kernels/multiclass_loss.h; interface:
// engines/row_engines.h). A whole cross_entropy call is one launch for 'none', two for 'sum' (the
// rows, then one block that adds the per-block partial sums in a fixed order) and three for a
// class-index 'mean' (a one-block pass over the targets first: the denominators the gradient
// holds), with no host synchronization: a bad class index is recorded for a deferred error
// (deferred_errors.cuh) and makes its row NaN.
//
// A group of threads owns a row: 8 threads for C <= 64 (32 rows per block), a warp for C <= 2048,
// else a block of 512 threads. Sweep 1 reads the row once with 16-byte loads (when the rows are
// 16-byte aligned, two per thread in flight), keeping a running max and sum of exp per thread
// and the target sums; the group reduces them (fixed order: bitwise reproducible, no atomics).
// Sweep 2, only when a gradient is asked for, writes the gradient once. When a block's row fits
// in shared memory (two blocks per SM), sweep 1 keeps it there and sweep 2 reads it back: each
// logit comes from HBM once. Longer rows are read twice, with the rows in flight bounded to fit
// in L2, so that the second read finds them there.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <limits>

#include "cuda/cross_entropy_rows.cuh"
#include "cuda/deferred_errors.cuh"
#include "cuda/row_reduce.cuh"
#include "engines/row_engines.h"
#include "kernels/multiclass_loss.h"

namespace fusedloss {
namespace cuda {
namespace {

using namespace cross_entropy_detail;

// The denominators of 'mean' with class-index targets, needed before the rows when the gradient
// holds them (or when z-loss and class weights give the two terms different ones): the summed
// target weights W and the non-ignored rows n. One block sums them in a fixed order (it reads
// only the targets) and writes the rows' gradient factors: {1/W, 1/n} when folded, else {1, W/n}.
template <typename scalar_t>
__global__ void __launch_bounds__(kBigGroup)
    mean_denominators(const int64_t* target, const scalar_t* weight, int64_t rows, int64_t C,
                      int64_t ignore_index, bool fold, acc_t<scalar_t>* grad_scales) {
  double v[kPartials] = {0, 0, 0, 0};
  for (int64_t r = threadIdx.x; r < rows; r += kBigGroup) {
    const int64_t t = target[r];
    if (t == ignore_index || t < 0 || t >= C) continue;
    v[2] += weight ? static_cast<double>(weight[t]) : 1.0;
    v[3] += 1.0;
  }
  __shared__ double sums[kPartials];
  write_block_sums<kBigGroup>(v, sums);
  __syncthreads();
  if (threadIdx.x == 0) {
    const double W = sums[2], n = sums[3];
    using acc = acc_t<scalar_t>;
    grad_scales[0] = fold ? static_cast<acc>(1.0 / W) : acc(1);
    grad_scales[1] = fold ? static_cast<acc>(1.0 / n) : static_cast<acc>(W / n);
  }
}

// Adds the per-block partial sums in a fixed order and writes the reduced loss, its z-loss part
// and the factor backward applies.
template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads)
    finish_reduction(const double* partials, int blocks, bool mean, bool folded, scalar_t* loss,
                     scalar_t* z_loss, acc_t<scalar_t>* backward_scale) {
  double v[kPartials] = {0, 0, 0, 0};
  for (int b = threadIdx.x; b < blocks; b += kRowThreads) {
#pragma unroll
    for (int k = 0; k < kPartials; ++k) v[k] += partials[b * kPartials + k];
  }
  __shared__ double sums[kPartials];
  write_block_sums<kRowThreads>(v, sums);
  __syncthreads();
  if (threadIdx.x != 0) return;
  const double L = sums[0], Z = sums[1], W = sums[2], n = sums[3];
  using acc = acc_t<scalar_t>;
  if (mean) {
    *loss = static_cast<scalar_t>(L / W + Z / n);  // 0 / 0 = NaN when all are ignored, as torch
    *z_loss = static_cast<scalar_t>(Z / n);
    // A zero W (every target ignored) gives 0: the gradient is 0 there, 0 * inf would be NaN.
    *backward_scale = folded ? acc(1) : (W == 0 ? acc(0) : static_cast<acc>(1.0 / W));
  } else {
    *loss = static_cast<scalar_t>(L + Z);
    *z_loss = static_cast<scalar_t>(Z);
    *backward_scale = acc(1);
  }
}

__global__ void __launch_bounds__(kRowThreads)
    find_bad_class_targets(const int64_t* target, int64_t rows, int64_t classes,
                           int64_t ignore_index, ErrorSink sink) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += stride) {
    const int64_t t = target[r];
    if (t != ignore_index && (t < 0 || t >= classes)) report_bad_value(sink, r, t);
  }
}

bool aligned16(const at::Tensor& t) {
  return !t.defined() || reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
}

template <typename scalar_t, int kGroup, int kBlock, bool kProb>
int launch_rows(Rows<scalar_t> a, const at::Tensor& logits, bool want_partials,
                at::Tensor& partials) {
  auto kernel = cross_entropy_rows<scalar_t, kGroup, kBlock, kProb>;
  const auto* props = at::cuda::getCurrentDeviceProperties();
  const int64_t row_bytes = a.num_classes * static_cast<int64_t>(sizeof(scalar_t));
  const auto occupancy = [&](size_t shared_bytes) {
    if (shared_bytes > (48 << 10)) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(shared_bytes)));
    }
    int blocks = 0;
    C10_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kBlock, shared_bytes));
    return blocks;
  };
  // A block's row is kept in shared memory when two such blocks still fit on an SM (one row at a
  // time per SM would leave the memory idle while it reduces). Otherwise the row is read twice,
  // and the rows in flight are bounded so that they fit in 3/4 of L2: the second read is a hit.
  a.cached = kGroup == kBlock &&
             row_bytes <= static_cast<int64_t>(props->sharedMemPerBlockOptin) - (4 << 10) &&
             occupancy(static_cast<size_t>(row_bytes)) >= 2;
  const size_t cache_bytes = a.cached ? static_cast<size_t>(row_bytes) : 0;
  int per_sm = occupancy(cache_bytes);
  if (kGroup == kBlock && !a.cached) {
    const int64_t l2_rows = std::max<int64_t>(1, int64_t{props->l2CacheSize} * 3 / 4 / row_bytes);
    per_sm = static_cast<int>(
        std::clamp<int64_t>(l2_rows / props->multiProcessorCount, 1, std::max(per_sm, 1)));
  }
  constexpr int kRowsPerBlock = kBlock / kGroup;
  const int64_t needed = (a.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  const int blocks = static_cast<int>(
      std::min<int64_t>(needed, static_cast<int64_t>(props->multiProcessorCount) *
                                    std::max(per_sm, 1)));
  if (want_partials) {
    partials = at::empty({blocks * kPartials}, logits.options().dtype(at::kDouble));
    a.partials = partials.mutable_data_ptr<double>();
  }
  kernel<<<blocks, kBlock, cache_bytes, at::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return blocks;
}

// Launches the rows kernel for the row width; returns its number of blocks.
template <typename scalar_t, bool kProb>
int launch_for_width(const Rows<scalar_t>& a, const at::Tensor& logits, bool want_partials,
                     at::Tensor& partials) {
  if (a.num_classes <= 64) {
    return launch_rows<scalar_t, 8, kRowThreads, kProb>(a, logits, want_partials, partials);
  }
  if (a.num_classes <= 2048) {
    return launch_rows<scalar_t, 32, kRowThreads, kProb>(a, logits, want_partials, partials);
  }
  return launch_rows<scalar_t, kBigGroup, kBigGroup, kProb>(a, logits, want_partials, partials);
}

template <typename scalar_t>
void run(const CrossEntropySpec& spec, const CrossEntropyOperands& o) {
  using acc = acc_t<scalar_t>;
  const bool whole = o.loss.defined();
  const bool reduced = whole && spec.reduction != at::Reduction::None;
  const bool mean = whole && spec.reduction == at::Reduction::Mean;
  const int64_t rows = o.logits.size(0), C = spec.num_classes;
  const auto data = [](const at::Tensor& t) {
    return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr;
  };
  const auto acc_data = [](const at::Tensor& t) {
    return t.defined() ? t.mutable_data_ptr<acc>() : nullptr;
  };
  // Rows mode: the op layer has checked the targets (record_bad_class_targets).
  const ErrorSink sink = whole && !spec.probability_targets && spec.check_target
                             ? error_sink(spec.op, BadValueKind::ClassIndex, C, spec.ignore_index)
                             : ErrorSink{};

  // 'mean': the gradient holds 1/denominators where it may (then backward has nothing to do for a
  // plain loss.backward(): its one kernel sees a factor of 1 and returns). Probability targets
  // divide by the row count, known here; class indices by sums over the targets, found first by a
  // one-block kernel that reads only them (a third launch, far cheaper than the pass over the
  // gradient it saves in backward).
  at::Tensor grad_scales = whole ? at::Tensor() : o.grad_scales;
  acc scale = 1, z_scale = 1;
  bool folded = false;
  if (mean && spec.probability_targets && spec.fold_mean && rows > 0) {
    scale = z_scale = static_cast<acc>(1.0 / static_cast<double>(rows));
    folded = true;
  } else if (mean && !spec.probability_targets &&
             (spec.fold_mean || (spec.z_loss != 0 && o.weight.defined()))) {
    grad_scales = at::empty({2}, o.logits.options().dtype(c10::CppTypeToScalarType<acc>::value));
    mean_denominators<scalar_t><<<1, kBigGroup, 0, at::cuda::getCurrentCUDAStream()>>>(
        o.target.const_data_ptr<int64_t>(),
        o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr, rows, C,
        spec.ignore_index, spec.fold_mean, grad_scales.mutable_data_ptr<acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    folded = spec.fold_mean;
  }

  Rows<scalar_t> a{};
  a.rows = rows;
  a.num_classes = C;
  a.row_offset = o.row_offset;
  a.logits = o.logits.const_data_ptr<scalar_t>();
  a.target_index = spec.probability_targets ? nullptr : o.target.const_data_ptr<int64_t>();
  a.target_prob = spec.probability_targets ? o.target.const_data_ptr<scalar_t>() : nullptr;
  a.weight = o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr;
  a.grad_scales = grad_scales.defined() ? grad_scales.const_data_ptr<acc>() : nullptr;
  a.scale = scale;
  a.z_scale = z_scale;
  a.row_loss = whole ? nullptr : acc_data(o.row_loss);
  a.row_z_loss = whole ? nullptr : acc_data(o.row_z_loss);
  a.loss_out = whole && !reduced ? data(o.loss) : nullptr;
  a.z_out = whole && !reduced ? data(o.z_loss) : nullptr;
  a.grad_input = data(o.grad_input);
  a.grad_target = data(o.grad_target);
  a.ignore_index = spec.ignore_index;
  a.smoothing = static_cast<acc>(spec.label_smoothing);
  a.z_loss = static_cast<acc>(spec.z_loss);
  a.cap = static_cast<acc>(spec.softcap);
  a.vectorized = (C * static_cast<int64_t>(sizeof(scalar_t))) % 16 == 0 && aligned16(o.logits) &&
                 aligned16(o.grad_input) &&
                 (!spec.probability_targets || (aligned16(o.target) && aligned16(o.grad_target)));
  a.sink = sink;

  at::Tensor partials;
  int blocks = 0;
  if (rows > 0) {
    blocks = spec.probability_targets
                 ? launch_for_width<scalar_t, true>(a, o.logits, reduced, partials)
                 : launch_for_width<scalar_t, false>(a, o.logits, reduced, partials);
  }
  if (reduced) {
    finish_reduction<scalar_t><<<1, kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        blocks > 0 ? partials.const_data_ptr<double>() : nullptr, blocks, mean, folded,
        data(o.loss), data(o.z_loss), acc_data(o.backward_scale));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  after_launch(sink);
}

}  // namespace

int64_t device_memory_bytes(c10::DeviceIndex device) {
  return static_cast<int64_t>(at::cuda::getDeviceProperties(device)->totalGlobalMem);
}

void record_bad_class_targets(const char* op, const at::Tensor& target, int64_t classes,
                              int64_t ignore_index) {
  const int64_t rows = target.numel();
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(target.device());
  const ErrorSink sink = error_sink(op, BadValueKind::ClassIndex, classes, ignore_index);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int blocks =
      static_cast<int>(std::min<int64_t>(sms * 4, (rows + kRowThreads - 1) / kRowThreads));
  find_bad_class_targets<<<blocks, kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      target.const_data_ptr<int64_t>(), rows, classes, ignore_index, sink);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  after_launch(sink);
}

void cross_entropy_kernel(const CrossEntropySpec& spec, const CrossEntropyOperands& operands) {
  const c10::cuda::CUDAGuard guard(operands.logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.logits.scalar_type(),
                                  "fusedloss_cross_entropy_cuda",
                                  [&] { run<scalar_t>(spec, operands); });
}

}  // namespace cuda
}  // namespace fusedloss

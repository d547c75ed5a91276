// CUDA engine of multilabel_margin_loss (interface: engines/row_engines.h; formula:
// kernels/multilabel_margin.h): a block owns a row. It finds where the labels end and checks the
// target (a bad entry is recorded for a deferred error, no synchronization, and makes the row
// NaN), counts each class's labels in the scratch row (integer atomics: exact), then each thread
// writes its elements' gradient once: a non-label's from its pairs with every label, a label's
// from its pairs with every non-label. The loss is reduced in a fixed order.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "cuda/deferred_errors.cuh"
#include "cuda/row_reduce.cuh"
#include "engines/row_engines.h"
#include "kernels/math.h"
#include "kernels/multilabel_margin.h"

namespace fusedloss {
namespace cuda {
namespace {

template <typename scalar_t>
struct MultilabelRows {
  using acc = acc_t<scalar_t>;
  int64_t classes;
  const scalar_t* input;
  const int64_t* target;
  int32_t* label_count;
  acc* row_loss;
  scalar_t* grad_input;  // nullptr: no gradient
  acc grad_scale;        // over C included
  ErrorSink sink;
};

template <typename T>
struct Min {
  __device__ T operator()(T a, T b) const { return b < a ? b : a; }
};

template <typename scalar_t>
__global__ void __launch_bounds__(kRowThreads) multilabel_margin_rows(MultilabelRows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  __shared__ acc shared_acc[kRowThreads / 32];
  __shared__ int64_t shared_index[kRowThreads / 32];
  const int64_t r = blockIdx.x, C = a.classes;
  const scalar_t* x = a.input + r * C;
  const int64_t* labels = a.target + r * C;
  int32_t* count = a.label_count + r * C;

  // Where the labels end (the first -1), and whether any entry is bad (torch checks them all).
  int64_t end = C, bad = 0;
  for (int64_t d = threadIdx.x; d < C; d += kRowThreads) {
    const int64_t v = labels[d];
    if (v == -1 && d < end) end = d;
    if (v < -1 || v >= C) {
      bad = 1;
      report_bad_value(a.sink, r * C + d, v);
    }
    count[d] = 0;
  }
  end = group_all_reduce<kRowThreads>(end, Min<int64_t>{}, shared_index);
  bad = group_all_reduce<kRowThreads>(bad, Max<int64_t>{}, shared_index);
  if (bad) {  // NaN, never an access out of bounds
    const acc nan = std::numeric_limits<acc>::quiet_NaN();
    if (threadIdx.x == 0) a.row_loss[r] = nan;
    if (a.grad_input != nullptr) {
      for (int64_t i = threadIdx.x; i < C; i += kRowThreads) {
        a.grad_input[r * C + i] = static_cast<scalar_t>(nan);
      }
    }
    return;
  }
  __syncthreads();  // the zeroed counts
  for (int64_t j = threadIdx.x; j < end; j += kRowThreads) atomicAdd(&count[labels[j]], 1);
  __syncthreads();

  acc loss = 0;
  for (int64_t i = threadIdx.x; i < C; i += kRowThreads) {
    const acc xi = static_cast<acc>(x[i]);
    const int32_t times_label = count[i];
    acc pairs = 0;
    if (times_label == 0) {
      for (int64_t j = 0; j < end; ++j) {
        const acc z = multilabel_margin_term(static_cast<acc>(x[labels[j]]), xi);
        loss += formulas::relu(z);  // NaN counts, unlike torch's `z > 0` test
        pairs += z > acc(0) ? acc(1) : acc(0);
      }
    } else {
      for (int64_t other = 0; other < C; ++other) {
        if (count[other] != 0) continue;
        pairs += multilabel_margin_term(xi, static_cast<acc>(x[other])) > acc(0) ? acc(1) : acc(0);
      }
      pairs *= static_cast<acc>(-times_label);
    }
    if (a.grad_input != nullptr) a.grad_input[r * C + i] = static_cast<scalar_t>(a.grad_scale * pairs);
  }
  loss = group_all_reduce<kRowThreads>(loss, Plus<acc>{}, shared_acc);
  if (threadIdx.x == 0) a.row_loss[r] = loss / static_cast<acc>(C);
}

template <typename scalar_t>
void run(const MultilabelMarginOperands& o) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = o.input.size(0), C = o.input.size(1);
  MultilabelRows<scalar_t> a{
      C,
      o.input.const_data_ptr<scalar_t>(),
      o.target.const_data_ptr<int64_t>(),
      o.label_counts.mutable_data_ptr<int32_t>(),
      o.row_loss.mutable_data_ptr<acc>(),
      o.grad_input.defined() ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr,
      static_cast<acc>(o.grad_scale / static_cast<double>(C)),
      error_sink("multilabel_margin_loss", BadValueKind::MultilabelClassIndex, C)};
  multilabel_margin_rows<scalar_t>
      <<<static_cast<unsigned>(rows), kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  after_launch(a.sink);
}

}  // namespace

void multilabel_margin_kernel(const MultilabelMarginOperands& operands) {
  if (operands.input.size(0) == 0) return;
  const c10::cuda::CUDAGuard guard(operands.input.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.input.scalar_type(),
                                  "fusedloss_multilabel_margin_cuda",
                                  [&] { run<scalar_t>(operands); });
}

}  // namespace cuda
}  // namespace fusedloss

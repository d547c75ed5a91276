// CPU engine of multilabel_margin_loss (interface: engines/row_engines.h; formula:
// kernels/multilabel_margin.h). Per row: the labels' counts, then one vectorized sweep over the
// row per label that sums the active hinges and counts them for the gradient, which is written
// once at the end. The op layer has checked the targets.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/element_convert.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "engines/row_engines.h"
#include "kernels/math.h"
#include "kernels/multilabel_margin.h"

namespace fusedloss {
namespace cpu {
namespace {

// Per-thread scratch of one row.
template <typename acc>
struct RowScratch {
  std::vector<int32_t> label_count;  // (C) how often each class is a label
  std::vector<acc> active;           // (C) active pairs each element is in
};

template <typename scalar_t, bool kGrad>
FUSEDLOSS_CPU_CLONES void rows_range(const MultilabelMarginOperands& o, int64_t begin,
                                     int64_t end, RowScratch<acc_t<scalar_t>>& scratch) {
  using acc = acc_t<scalar_t>;
  const int64_t C = o.input.size(1);
  const scalar_t* input = o.input.const_data_ptr<scalar_t>();
  const int64_t* target = o.target.const_data_ptr<int64_t>();
  acc* row_loss = o.row_loss.mutable_data_ptr<acc>();
  scalar_t* grad = kGrad ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr;
  const acc inv_classes = acc(1) / static_cast<acc>(C);
  const acc scale = static_cast<acc>(o.grad_scale) * inv_classes;
  int32_t* count = scratch.label_count.data();
  acc* active = scratch.active.data();
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* x = input + r * C;
    const int64_t* labels = target + r * C;
    int64_t k = 0;
    while (k < C && labels[k] >= 0) ++k;  // the labels end at the first -1
    std::fill(count, count + C, 0);
    for (int64_t j = 0; j < k; ++j) ++count[labels[j]];
    if constexpr (kGrad) std::fill(active, active + C, acc(0));
    acc loss = 0;
    for (int64_t j = 0; j < k; ++j) {
      const acc x_label = load_as_acc(x[labels[j]]);
      acc pairs = 0;
#pragma omp simd reduction(+ : loss, pairs)
      for (int64_t i = 0; i < C; ++i) {
        const acc z = multilabel_margin_term(x_label, load_as_acc(x[i]));
        const bool other = count[i] == 0;
        loss += other ? formulas::relu(z) : acc(0);  // NaN counts, unlike torch's `z > 0` test
        const acc on = other && z > acc(0) ? acc(1) : acc(0);
        pairs += on;
        if constexpr (kGrad) active[i] += on;
      }
      if constexpr (kGrad) active[labels[j]] += pairs;  // a label: no sweep above touches it
    }
    row_loss[r] = loss * inv_classes;
    if constexpr (kGrad) {
#pragma omp simd
      for (int64_t i = 0; i < C; ++i) {
        grad[r * C + i] = store_from_acc<scalar_t>((count[i] == 0 ? scale : -scale) * active[i]);
      }
    }
  }
}

}  // namespace

void multilabel_margin_kernel(const MultilabelMarginOperands& o) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.input.scalar_type(), "fusedloss_multilabel_margin_cpu", [&] {
        using acc = acc_t<scalar_t>;
        const int64_t rows = o.input.size(0), C = o.input.size(1);
        const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 12) / std::max<int64_t>(C, 1));
        at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
          RowScratch<acc> scratch{std::vector<int32_t>(C), std::vector<acc>(C)};
          o.grad_input.defined() ? rows_range<scalar_t, true>(o, begin, end, scratch)
                                 : rows_range<scalar_t, false>(o, begin, end, scratch);
        });
      });
}

}  // namespace cpu
}  // namespace fusedloss

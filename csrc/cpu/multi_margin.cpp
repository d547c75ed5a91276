// CPU row engine of the multi-class hinge (multi_margin_loss): one sweep per row reads the
// logits once, writes the per-row loss and, when asked, the gradient.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "cpu/element_convert.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "engines/row_engines.h"
#include "kernels/multiclass_loss.h"

namespace fusedloss {
namespace cpu {
namespace {

template <typename scalar_t, bool kSquared, bool kGrad>
FUSEDLOSS_CPU_CLONES void rows_range(const MultiMarginSpec& spec, const MultiMarginOperands& o,
                                     const acc_t<scalar_t>* weight, int64_t begin, int64_t end) {
  using acc = acc_t<scalar_t>;
  const int64_t C = o.input.size(1);
  const scalar_t* input = o.input.const_data_ptr<scalar_t>();
  const int64_t* target = o.target.const_data_ptr<int64_t>();
  acc* row_loss = o.row_loss.mutable_data_ptr<acc>();
  scalar_t* grad = kGrad ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr;
  const acc margin = static_cast<acc>(spec.margin);
  const acc scale = static_cast<acc>(o.grad_scale);
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* x = input + r * C;
    const int64_t t = target[r];  // in range: checked by the op layer
    const acc x_t = load_as_acc(x[t]);
    const acc w_over_c = weight[t] / static_cast<acc>(C);
    acc loss = 0, slope_sum = 0;
#pragma omp simd reduction(+ : loss, slope_sum)
    for (int64_t c = 0; c < C; ++c) {
      auto term = formulas::multi_margin_term(load_as_acc(x[c]), x_t, margin, kSquared, w_over_c);
      if (c == t) term = {acc(0), acc(0)};
      loss += term.value;
      slope_sum += term.slope;
      if constexpr (kGrad) grad[r * C + c] = store_from_acc<scalar_t>(term.slope * scale);
    }
    row_loss[r] = loss;
    if constexpr (kGrad) grad[r * C + t] = store_from_acc<scalar_t>(-slope_sum * scale);
  }
}

template <typename scalar_t>
void run(const MultiMarginSpec& spec, const MultiMarginOperands& o) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = o.input.size(0), C = o.input.size(1);
  std::vector<acc> weight(static_cast<size_t>(C), acc(1));
  if (o.weight.defined()) {
    const scalar_t* w = o.weight.const_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) weight[c] = load_as_acc(w[c]);
  }
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(C, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    const bool grad = o.grad_input.defined();
    if (spec.p == 2) {
      grad ? rows_range<scalar_t, true, true>(spec, o, weight.data(), begin, end)
           : rows_range<scalar_t, true, false>(spec, o, weight.data(), begin, end);
    } else {
      grad ? rows_range<scalar_t, false, true>(spec, o, weight.data(), begin, end)
           : rows_range<scalar_t, false, false>(spec, o, weight.data(), begin, end);
    }
  });
}

}  // namespace

void multi_margin_kernel(const MultiMarginSpec& spec, const MultiMarginOperands& operands) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.input.scalar_type(),
                                  "fusedloss_multi_margin_cpu",
                                  [&] { run<scalar_t>(spec, operands); });
}

}  // namespace cpu
}  // namespace fusedloss

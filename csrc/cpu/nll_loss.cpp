// CPU engine of nll_loss (interface: engines/row_engines.h; per-row math: kernels/nll_loss.h).
// Forward reads one element per row and checks its target (raising after the pass); the sums of
// 'mean' and 'sum' are taken in float64 over fixed parts of the rows and added in part order, so
// the result does not depend on the thread count. Backward writes each gradient block once: zeros,
// then the picked elements.

#include "kernels/nll_loss.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

#include "cpu/element_convert.h"
#include "engines/bad_values.h"
#include "engines/row_engines.h"

namespace fusedloss {
namespace cpu {
namespace {

constexpr int64_t kRowsPerPart = 1 << 14;

// The flat position of class t of row r in (outer, C, inner); no division for (N, C) inputs.
inline int64_t element_of(int64_t r, int64_t t, int64_t classes, int64_t inner) {
  if (inner == 1) return r * classes + t;
  return (r / inner * classes + t) * inner + r % inner;
}

template <typename scalar_t>
void forward(const NllSpec& spec, const NllOperands& o) {
  using acc = decltype(load_as_acc(std::declval<scalar_t>()));
  const int64_t rows = o.target.numel(), C = spec.num_classes, inner = spec.inner;
  const scalar_t* x = o.input.const_data_ptr<scalar_t>();
  const int64_t* target = o.target.const_data_ptr<int64_t>();
  const scalar_t* weight = o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr;
  const bool none = spec.reduction == at::Reduction::None;
  scalar_t* loss_out = o.loss.mutable_data_ptr<scalar_t>();
  const int64_t parts = (rows + kRowsPerPart - 1) / kRowsPerPart;
  std::vector<double> loss_sums(static_cast<size_t>(parts)), weight_sums(loss_sums.size());
  std::vector<int64_t> first_bad(loss_sums.size(), -1);  // per part: the first bad row
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    for (int64_t part = first; part < last; ++part) {
      double loss_sum = 0, weight_sum = 0;
      const int64_t end = std::min(rows, (part + 1) * kRowsPerPart);
      for (int64_t r = part * kRowsPerPart; r < end; ++r) {
        const int64_t t = target[r];
        const acc w = nll_row_weight<acc>(t, weight, C, spec.ignore_index);
        if (!(w == w) && first_bad[static_cast<size_t>(part)] < 0) {
          first_bad[static_cast<size_t>(part)] = r;
        }
        // A bad target picks nothing: its weight is NaN, and so is its loss.
        const acc picked =
            w == w && w != acc(0) ? load_as_acc(x[element_of(r, t, C, inner)]) : acc(0);
        const acc loss = nll_row_loss(w, picked);
        if (none) {
          loss_out[r] = static_cast<scalar_t>(loss);
        } else {
          loss_sum += static_cast<double>(loss);
          weight_sum += static_cast<double>(w);
        }
      }
      loss_sums[static_cast<size_t>(part)] = loss_sum;
      weight_sums[static_cast<size_t>(part)] = weight_sum;
    }
  });
  if (spec.check_target) {  // the check costs no pass of its own
    for (const int64_t r : first_bad) {
      if (r < 0) continue;
      BadValueRecord record = empty_bad_value_record();
      record.kind = static_cast<int32_t>(BadValueKind::ClassIndex);
      record.op = reinterpret_cast<unsigned long long>(spec.op);
      record.position = r;
      record.value = target[r];
      record.limit = C;
      record.extra = spec.ignore_index;
      raise_bad_value(record);
    }
  }
  if (none) return;
  double L = 0, W = 0;
  for (int64_t part = 0; part < parts; ++part) {
    L += loss_sums[static_cast<size_t>(part)];
    W += weight_sums[static_cast<size_t>(part)];
  }
  const bool mean = spec.reduction == at::Reduction::Mean;
  *loss_out = static_cast<scalar_t>(mean ? L / W : L);  // 0 / 0 = NaN when all are ignored
  *o.total_weight.mutable_data_ptr<acc>() = static_cast<acc>(W);
}

template <typename scalar_t>
void backward(const NllSpec& spec, const NllBackwardOperands& o) {
  using acc = decltype(load_as_acc(std::declval<scalar_t>()));
  const int64_t rows = o.target.numel(), C = spec.num_classes, inner = spec.inner;
  const int64_t outer = inner > 0 ? rows / inner : 0;
  const int64_t* target = o.target.const_data_ptr<int64_t>();
  const scalar_t* weight = o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* grad_output = o.grad_output.const_data_ptr<scalar_t>();
  const bool none = spec.reduction == at::Reduction::None;
  const acc scale = nll_mean_scale(spec.reduction == at::Reduction::Mean,
                                   none ? acc(1) : *o.total_weight.const_data_ptr<acc>());
  scalar_t* grad = o.grad_input.mutable_data_ptr<scalar_t>();
  const int64_t block = C * inner;  // the gradient of one outer index
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(block, 1));
  at::parallel_for(0, outer, grain, [&](int64_t begin, int64_t end) {
    std::memset(static_cast<void*>(grad + begin * block), 0,
                static_cast<size_t>((end - begin) * block) * sizeof(scalar_t));
    for (int64_t r = begin * inner; r < end * inner; ++r) {
      const int64_t t = target[r];
      const acc w = nll_row_weight<acc>(t, weight, C, spec.ignore_index);
      if (!(w == w) || w == acc(0)) continue;  // ignored or bad: nothing picked, all zeros
      const acc g = load_as_acc(grad_output[none ? r * o.grad_output_stride : 0]);
      grad[element_of(r, t, C, inner)] = static_cast<scalar_t>(-(w * g) * scale);
    }
  });
}

}  // namespace

void nll_loss_kernel(const NllSpec& spec, const NllOperands& operands) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.input.scalar_type(),
                                  "fusedloss_nll_loss_cpu",
                                  [&] { forward<scalar_t>(spec, operands); });
}

void nll_loss_backward_kernel(const NllSpec& spec, const NllBackwardOperands& operands) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.grad_input.scalar_type(),
                                  "fusedloss_nll_loss_backward_cpu",
                                  [&] { backward<scalar_t>(spec, operands); });
}

}  // namespace cpu
}  // namespace fusedloss

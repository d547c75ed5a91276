// Shared operator-layer pieces of the class-index row losses; see cross_entropy_common.h.

#include "ops/cross_entropy_common.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

#include "engines/row_engines.h"
#include "engines/bad_values.h"

namespace fusedloss {
namespace ops {

void check_cross_entropy_options(c10::string_view op, double label_smoothing, double z_loss,
                                 std::optional<double> softcap) {
  TORCH_CHECK(label_smoothing >= 0 && label_smoothing <= 1, "fusedloss.", op,
              ": label_smoothing must be between 0.0 and 1.0, got ", label_smoothing);
  TORCH_CHECK_VALUE(z_loss >= 0 && std::isfinite(z_loss), "fusedloss.", op,
                    ": z_loss must be a finite number >= 0, got ", z_loss);
  TORCH_CHECK_VALUE(!softcap.has_value() || (*softcap > 0 && std::isfinite(*softcap)), "fusedloss.",
                    op, ": softcap must be a finite number > 0 (or None), got ",
                    softcap.value_or(0));
}

at::Tensor checked_class_targets(c10::string_view op, const at::Tensor& target, int64_t classes,
                                 int64_t ignore_index, bool check) {
  // contiguous: the engines index row r at offset r (a strided or expanded target would not be).
  at::Tensor t = target.reshape({-1}).to(at::kLong).contiguous();
#ifdef FUSEDLOSS_WITH_CUDA
  if (check && t.is_cuda()) {
    cuda::record_bad_class_targets(static_op_name(op), t, classes, ignore_index);
    return t;
  }
#endif
  if (check) {
    const at::Tensor bad = t.ne(ignore_index).logical_and_(t.lt(0).logical_or_(t.ge(classes)));
    if (bad.any().item<bool>()) {
      const int64_t at = first_true_position(bad);
      TORCH_CHECK_INDEX(false, "fusedloss.", op, ": target ", t[at].item<int64_t>(),
                        " is out of bounds: expected a class in [0, ", classes,
                        ") or ignore_index (", ignore_index, "); found at position ", at,
                        " of the flattened target");
    }
  }
  return t;
}

at::Tensor class_target_weights(const at::Tensor& t, const std::optional<at::Tensor>& weight,
                                int64_t classes, int64_t ignore_index, at::ScalarType dtype) {
  const auto options = t.options().dtype(dtype);
  const at::Tensor in_range = t.ge(0).logical_and_(t.lt(classes));
  at::Tensor w = weight.has_value() && classes > 0
                     ? weight->to(dtype).index_select(0, t.clamp(0, classes - 1))
                     : at::ones({t.numel()}, options);
  w = at::where(in_range, w, at::full({}, std::numeric_limits<double>::quiet_NaN(), options));
  return at::where(t.eq(ignore_index), at::zeros({}, options), w);
}

MeanDenominators class_index_denominators(const at::Tensor& t,
                                          const std::optional<at::Tensor>& weight, int64_t classes,
                                          int64_t ignore_index, at::ScalarType acc_dtype) {
  return {class_target_weights(t, weight, classes, ignore_index, acc_dtype).sum(),
          t.ne(ignore_index).sum().to(acc_dtype)};
}

at::Tensor row_grad_scales(at::Reduction::Reduction reduction, bool fold,
                           const MeanDenominators& d, const at::TensorOptions& acc_options) {
  if (reduction != at::Reduction::Mean) return at::ones({2}, acc_options);
  if (fold) {
    return at::stack({d.total_weight.reciprocal(), d.valid_count.reciprocal()});
  }
  return at::stack({at::ones({}, acc_options), d.total_weight.div(d.valid_count)});
}

at::Tensor backward_scale(at::Reduction::Reduction reduction, bool fold, const MeanDenominators& d,
                          const at::TensorOptions& acc_options) {
  if (reduction == at::Reduction::None) return at::empty({0}, acc_options);
  if (reduction == at::Reduction::Sum || fold) return at::ones({}, acc_options);
  const at::Tensor w = d.total_weight.to(acc_options.dtype());
  return at::where(w.eq(0), at::zeros({}, acc_options), w.reciprocal());
}

ReducedLoss reduce_rows(const at::Tensor& row_loss, const at::Tensor& row_z_loss,
                        at::Reduction::Reduction reduction, const MeanDenominators& d,
                        at::IntArrayRef shape, at::ScalarType dtype) {
  const bool has_z = row_z_loss.defined();
  if (reduction == at::Reduction::None) {
    const at::Tensor loss = has_z ? row_loss.add(row_z_loss) : row_loss;
    return {loss.to(dtype).view(shape), has_z ? row_z_loss.to(dtype).view(shape)
                                              : at::zeros(shape, row_loss.options().dtype(dtype))};
  }
  at::Tensor loss = row_loss.sum(at::kDouble);
  at::Tensor z = has_z ? row_z_loss.sum(at::kDouble) : at::zeros({}, loss.options());
  if (reduction == at::Reduction::Mean) {
    loss = loss.div(d.total_weight.to(at::kDouble));  // 0 / 0 = NaN when all are ignored, as torch
    z = z.div(d.valid_count.to(at::kDouble));
  }
  return {loss.add(z).to(dtype), z.to(dtype)};
}

}  // namespace ops
}  // namespace fusedloss

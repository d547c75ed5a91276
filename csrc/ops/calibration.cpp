// The calibration error in two ops for Python (fusedloss.metrics.calibration_error,
// CalibrationError) and C++ (fusedloss::metrics::CalibrationError): _calibration_bins, one
// batch's per-bin sums (the state, merged by addition), and _calibration_error, the value of a
// state. Confidence and accuracy as torchmetrics (binary: the probability and the
// 0/1 target; multiclass: the largest probability and whether its class is the target), a batch
// with any counted score outside [0, 1] taken as logits (sigmoid / softmax first), bins
// linspace(0, 1, n_bins + 1) with right-closed bucketing. ATen ops only (bucketize, one
// scatter-add): no read-back from a GPU; targets that are not labels are counted, and the
// caller raises when it computes the value.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "ops/arguments.h"  // holds_no_values, nan_where_invalid

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor> calibration_bins(const Tensor& preds, const Tensor& target,
                                            c10::string_view task, int64_t n_bins,
                                            std::optional<int64_t> num_classes,
                                            std::optional<int64_t> ignore_index) {
  const bool binary = task == "binary";
  TORCH_CHECK_VALUE(binary || task == "multiclass",
                    "fusedloss.metrics: task must be 'binary' or 'multiclass', got '", task, "'");
  TORCH_CHECK_VALUE(n_bins >= 1, "fusedloss.metrics: n_bins must be a positive int, got ", n_bins);
  TORCH_CHECK_VALUE(at::isFloatingType(preds.scalar_type()),
                    "fusedloss.metrics: preds must hold float scores, got ", preds.scalar_type());
  TORCH_CHECK_VALUE(!at::isFloatingType(target.scalar_type()),
                    "fusedloss.metrics: target must hold integer labels, got ", target.scalar_type());
  // Bucketed in the scores' precision (at least float32), as torchmetrics; summed in float64.
  const Tensor scores = preds.scalar_type() == at::kDouble ? preds : preds.to(at::kFloat);
  const Tensor outside = scores.lt(0).logical_or(scores.gt(1));
  const Tensor kept = ignore_index.has_value() ? target.ne(*ignore_index)
                                               : at::ones_like(target, target.options().dtype(at::kBool));
  Tensor confidence, accuracy, label;
  if (binary) {
    TORCH_CHECK_VALUE(preds.sym_sizes() == target.sym_sizes(),
                      "fusedloss.metrics: binary expects preds and target of one shape, got ",
                      preds.sym_sizes(), " and ", target.sym_sizes());
    // Logits when a score of a counted sample is outside [0, 1] (torchmetrics drops the ignored
    // samples first).
    const Tensor logits = outside.logical_and(kept).any();
    const Tensor flat = scores.reshape({-1});
    confidence = at::where(logits, flat.sigmoid(), flat);
    accuracy = target.reshape({-1}).to(at::kDouble);
    label = target.reshape({-1}).eq(0).logical_or(target.reshape({-1}).eq(1));
  } else {
    // The class count is a constant of a traced graph; the batch (sym sizes) stays symbolic.
    const int64_t classes = num_classes.value_or(preds.dim() == 2 ? preds.size(1) : -1);
    TORCH_CHECK_VALUE(preds.dim() == 2 && preds.sym_size(1) == classes && target.dim() == 1 &&
                          target.sym_size(0) == preds.sym_size(0),
                      "fusedloss.metrics: multiclass expects preds (N, ", classes,
                      ") and target (N), got preds of shape ", preds.sym_sizes(),
                      " and target of shape ", target.sym_sizes());
    const Tensor logits = outside.any(1).logical_and(kept).any();
    auto [top, predicted] = at::where(logits, scores.softmax(1), scores).max(1);
    confidence = top;
    accuracy = predicted.eq(target).to(at::kDouble);
    label = target.ge(0).logical_and(target.lt(classes));
  }
  const Tensor counted = kept.reshape({-1});
  const Tensor invalid = label.logical_not().logical_and(counted).sum();
  const Tensor weight = counted.to(at::kDouble);
  const Tensor boundaries = at::linspace(0, 1, n_bins + 1, confidence.options());
  const Tensor bins =
      (at::bucketize(confidence, boundaries, /*out_int32=*/false, /*right=*/true) - 1)
          .clamp(0, n_bins);
  const Tensor values = at::stack({weight, confidence.to(at::kDouble) * weight, accuracy * weight});
  Tensor sums = at::zeros({3, n_bins + 1}, values.options());
  sums.scatter_add_(1, bins.unsqueeze(0).expand({3, -1}), values);
  return {sums, invalid};
}

Tensor error_of_bins(const Tensor& bin_sums, c10::string_view norm) {
  const Tensor count = bin_sums[0];
  const Tensor gap = (bin_sums[2] / count).nan_to_num(0.0) - (bin_sums[1] / count).nan_to_num(0.0);
  const Tensor share = count / count.sum();
  if (norm == "l1") return (gap.abs() * share).sum();
  if (norm == "max") return gap.abs().max();
  return (gap.pow(2) * share).sum().sqrt();
}

// The 'l1' (ECE), 'max' (MCE) or 'l2' (RMS) error of a state; raises a ValueError when targets
// that are not labels were counted into it (one read of that count: the value is being computed).
// Traced (fake tensors), the count cannot be read: the value is then NaN where it is not 0.
Tensor calibration_error(const Tensor& bin_sums, const Tensor& invalid, c10::string_view norm) {
  TORCH_CHECK_VALUE(norm == "l1" || norm == "l2" || norm == "max",
                    "fusedloss.metrics: norm must be 'l1', 'l2' or 'max', got '", norm, "'");
  const bool traced = holds_no_values(invalid);
  if (!traced) {
    const int64_t bad = invalid.item<int64_t>();
    TORCH_CHECK_VALUE(bad == 0, "fusedloss.metrics: calibration_error: ", bad,
                      " targets were not labels (0/1, or a class in [0, num_classes)) nor "
                      "ignore_index");
  }
  const Tensor value = error_of_bins(bin_sums, norm);
  return traced ? nan_where_invalid(value, invalid) : value;
}

}  // namespace
}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "_calibration_bins(Tensor preds, Tensor target, str task, int n_bins, int? num_classes, "
      "int? ignore_index) -> (Tensor bin_sums, Tensor invalid)");
  m.def("_calibration_error(Tensor bin_sums, Tensor invalid, str norm) -> Tensor");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeImplicitAutograd, m) {
  m.impl("_calibration_bins", TORCH_FN(fusedloss::ops::calibration_bins));
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("_calibration_error", TORCH_FN(fusedloss::ops::calibration_error));
}

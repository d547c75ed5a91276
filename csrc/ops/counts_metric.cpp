// The thresholded classification scores from per-class counts (tp, fp, tn, fn of shape (..., C)),
// with torchmetrics' rules, in one place for every caller that holds counts rather than a
// confusion matrix: multilabel (per label, global) and samplewise (per sample and class, every
// task), from Python and from the C++ API. Leading dimensions (samples) are kept.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/arguments.h"
#include "ops/zero_division.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;

// multiclass: accuracy is tp / (tp + fn) and 'macro' skips the classes absent from counts
// (tp + fp + fn = 0), as torchmetrics' multiclass; otherwise (binary, multilabel) accuracy counts
// the negatives too and every class weighs in 'macro'.
Tensor metric_of_counts(const Tensor& tp_in, const Tensor& fp_in, const Tensor& tn_in,
                        const Tensor& fn_in, c10::string_view metric, c10::string_view average,
                        double beta, double zero_division, bool multiclass) {
  Tensor tp = tp_in, fp = fp_in, tn = tn_in, fn = fn_in;
  if (metric == "stat_scores") {
    const Tensor scores = at::stack({tp, fp, tn, fn, tp + fn}, -1);
    if (average == "micro") return scores.sum(-2);
    if (average == "none") return scores;
    if (average == "macro") return scores.to(at::kDouble).mean(-2);
    const Tensor support = (tp + fn).to(at::kDouble);
    return (scores.to(at::kDouble) * (support / support.sum(-1, true)).unsqueeze(-1)).sum(-2);
  }
  if (average == "micro") tp = tp.sum(-1), fp = fp.sum(-1), tn = tn.sum(-1), fn = fn.sum(-1);
  Tensor score;
  if (metric == "accuracy") {
    score = multiclass ? divide_or(tp, tp + fn, 0.0) : divide_or(tp + tn, tp + tn + fp + fn, 0.0);
  } else if (metric == "precision") {
    score = divide_or(tp, tp + fp, zero_division);
  } else if (metric == "recall") {
    score = divide_or(tp, tp + fn, zero_division);
  } else {
    TORCH_CHECK_VALUE(metric == "fbeta", "fusedloss.metrics: unknown metric '", metric, "'");
    const double b2 = beta * beta;
    score = divide_or((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp, zero_division);
  }
  if (average == "micro" || average == "none") return score;
  Tensor weights = average == "weighted" ? (tp + fn).to(at::kDouble) : at::ones_like(score);
  if (average == "macro" && multiclass) {
    weights = at::where((tp + fp + fn).eq(0), at::zeros_like(weights), weights);
  }
  return divide_or(weights * score, weights.sum(-1, true), 0.0).sum(-1);
}

Tensor counts_metric(const Tensor& tp, const Tensor& fp, const Tensor& tn, const Tensor& fn,
                     const Tensor& invalid, c10::string_view metric, c10::string_view average,
                     double beta, double zero_division, bool multiclass) {
  TORCH_CHECK_VALUE(average == "micro" || average == "macro" || average == "weighted" ||
                        average == "none",
                    "fusedloss.metrics: average must be 'micro', 'macro', 'weighted' or 'none', got '",
                    average, "'");
  const bool traced = holds_no_values(invalid);
  if (!traced) {
    const int64_t bad = invalid.item<int64_t>();
    TORCH_CHECK_VALUE(bad == 0, "fusedloss.metrics: ", bad,
                      " targets were not labels (0/1, or a class in [0, num_classes)) nor "
                      "ignore_index");
  }
  const Tensor result =
      metric_of_counts(tp, fp, tn, fn, metric, average, beta, zero_division, multiclass);
  return traced ? nan_where_invalid(result, invalid) : result;
}

}  // namespace
}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "_counts_metric(Tensor tp, Tensor fp, Tensor tn, Tensor fn, Tensor invalid, str metric, "
      "str average, float beta=1.0, float zero_division=0.0, bool multiclass=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("_counts_metric", TORCH_FN(fusedloss::ops::counts_metric));
}

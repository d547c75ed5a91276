#pragma once
// fusedloss::metrics::ThresholdMetrics and CalibrationError — the binned threshold-free metrics (precision-recall
// curve, ROC, AUROC, average precision) for C++ trainers, with torchmetrics' definitions, as
// fusedloss.metrics computes them in Python: the state is the (C, 2, T + 1) int64 histogram of
// fusedloss::_threshold_histogram (one pass per update, never waiting for a GPU, merged by
// addition); every threshold's counts are its suffix sums.
//
//   fusedloss::metrics::ThresholdMetrics scores("multiclass", 200, ThresholdOptions().num_classes(10));
//   for (auto& [x, y] : batches) scores.update(model->forward(x), y);
//   double auroc = scores.auroc("macro").item<double>();

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/arg.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>

namespace fusedloss {
namespace metrics {

struct ThresholdOptions {
  TORCH_ARG(int64_t, num_classes) = 1;  // classes (multiclass) or labels (multilabel); binary: 1
  TORCH_ARG(std::optional<int64_t>, ignore_index) = std::nullopt;
};

class ThresholdMetrics {
 public:
  // task: "binary", "multiclass" (one-vs-rest) or "multilabel"; thresholds: ascending (a 1-D
  // tensor), or a count of linspace(0, 1) points.
  ThresholdMetrics(std::string task, at::Tensor thresholds, ThresholdOptions options = {})
      : task_(std::move(task)), options_(std::move(options)), thresholds_(thresholds.to(at::kDouble)) {
    TORCH_CHECK_VALUE(thresholds_.dim() == 1 && thresholds_.numel() > 0,
                      "fusedloss::metrics::ThresholdMetrics: thresholds must be a non-empty 1-D tensor");
    TORCH_CHECK_VALUE(thresholds_.numel() == 1 ||
                          thresholds_.slice(0, 1).ge(thresholds_.slice(0, 0, -1)).all().item<bool>(),
                      "fusedloss::metrics::ThresholdMetrics: thresholds must be in ascending order");
    if (task_ == "binary") options_.num_classes(1);
    reset();
  }
  ThresholdMetrics(std::string task, int64_t thresholds, ThresholdOptions options = {})
      : ThresholdMetrics(std::move(task), at::linspace(0, 1, thresholds), std::move(options)) {}

  // Adds a batch: scores (probabilities, or logits when any is outside [0, 1]) and labels.
  void update(const at::Tensor& preds, const at::Tensor& target) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fusedloss::_threshold_histogram", "")
            .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                      const at::Tensor&, c10::string_view, int64_t,
                                                      std::optional<int64_t>)>();
    const bool binary = task_ == "binary";
    if (!updated_) {  // the state follows the data to its device once: no copies per update
      thresholds_ = thresholds_.to(preds.device());
      histogram_ = histogram_.to(preds.device());
      invalid_ = invalid_.to(preds.device());
      updated_ = true;
    }
    auto [histogram, invalid] = op.call(binary ? preds.reshape({-1}) : preds,
                                        binary ? target.reshape({-1}) : target, thresholds_,
                                        task_, options_.num_classes(), options_.ignore_index());
    histogram_.add_(histogram.to(histogram_.device()));
    invalid_.add_(invalid.to(invalid_.device()));
  }

  void merge(const ThresholdMetrics& other) {
    histogram_.add_(other.histogram_.to(histogram_.device()));
    invalid_.add_(other.invalid_.to(invalid_.device()));
  }

  // Zeros the state where it is (its device stays).
  void reset() {
    const auto options = thresholds_.options().dtype(at::kLong);
    histogram_ = at::zeros({options_.num_classes(), 2, thresholds_.numel() + 1}, options);
    invalid_ = at::zeros({}, options);
  }

  // (precision, recall) of shape (C, T + 1) (a 1 and a 0 appended), and the thresholds (T).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> precision_recall_curve() const {
    const auto [tp, fp, fn, tn] = confusion();
    const auto ones = at::ones({tp.size(0), 1}, tp.options().dtype(at::kDouble));
    return {at::cat({divide(tp, tp + fp, NAN), ones}, 1),
            at::cat({divide(tp, tp + fn, NAN), at::zeros_like(ones)}, 1), thresholds_};
  }

  // (fpr, tpr) of shape (C, T) and the thresholds, from the highest threshold down.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> roc() const {
    const auto [tp, fp, fn, tn] = confusion();
    return {divide(fp, fp + tn, 0).flip(-1), divide(tp, tp + fn, 0).flip(-1), thresholds_.flip(0)};
  }

  // average: "macro" | "weighted" | "none" (binary: the one score); max_fpr: binary partial AUROC
  // with the McClish correction.
  at::Tensor auroc(const std::string& average = "macro",
                   std::optional<double> max_fpr = std::nullopt) const {
    auto [fpr, tpr, thresholds] = roc();
    if (max_fpr.has_value()) {
      TORCH_CHECK_VALUE(task_ == "binary" && *max_fpr > 0 && *max_fpr <= 1,
                        "fusedloss::metrics::ThresholdMetrics: max_fpr must be in (0, 1] and "
                        "applies to the binary task only");
      return partial_auroc(fpr[0], tpr[0], *max_fpr);
    }
    return reduce(at::trapezoid(tpr, fpr, -1), average);
  }

  at::Tensor average_precision(const std::string& average = "macro") const {
    auto [precision, recall, thresholds] = precision_recall_curve();
    precision = precision.nan_to_num(0.0);
    recall = recall.nan_to_num(0.0);
    const int64_t n = recall.size(1);
    const at::Tensor steps = recall.slice(1, 1, n) - recall.slice(1, 0, n - 1);
    return reduce(-(steps * precision.slice(1, 0, n - 1)).sum(1), average);
  }

  // The state: (C, 2, T + 1) int64 [class][negative, positive][bin].
  const at::Tensor& histogram() const { return histogram_; }

 private:
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> confusion() const {
    check_labels();
    const at::Tensor at_least = histogram_.flip(-1).cumsum(-1).flip(-1);
    const int64_t bins = at_least.size(2);
    const at::Tensor tp = at_least.select(1, 1).slice(1, 1, bins);
    const at::Tensor fp = at_least.select(1, 0).slice(1, 1, bins);
    return {tp, fp, at_least.select(1, 1).slice(1, 0, 1) - tp,
            at_least.select(1, 0).slice(1, 0, 1) - fp};
  }

  void check_labels() const {
    const int64_t bad = invalid_.item<int64_t>();
    TORCH_CHECK_VALUE(bad == 0, "fusedloss::metrics::ThresholdMetrics: ", bad,
                      " targets were not labels (0/1, or a class in [0, num_classes), or "
                      "ignore_index)");
  }

  static at::Tensor divide(const at::Tensor& num, const at::Tensor& den, double zero_division) {
    const at::Tensor d = den.to(at::kDouble);
    return at::where(d.ne(0), num.to(at::kDouble) / d.clamp_min(1),
                     at::full({}, zero_division, d.options()));
  }

  // Per-class scores averaged as torchmetrics: NaN classes skipped; weighted by positives.
  at::Tensor reduce(const at::Tensor& scores, const std::string& average) const {
    if (task_ == "binary") return scores[0];
    if (average == "none") return scores;
    const at::Tensor kept = scores.isnan().logical_not();
    if (average == "macro") return scores.masked_select(kept).mean();
    TORCH_CHECK_VALUE(average == "weighted", "fusedloss::metrics::ThresholdMetrics: average must "
                      "be 'macro', 'weighted' or 'none', got '", average, "'");
    const at::Tensor weights = histogram_.select(1, 1).sum(-1).to(at::kDouble).masked_select(kept);
    return (scores.masked_select(kept) * weights / weights.sum()).sum();
  }

  static at::Tensor partial_auroc(const at::Tensor& fpr, const at::Tensor& tpr, double max_fpr) {
    if (max_fpr == 1 || fpr.sum().item<double>() == 0 || tpr.sum().item<double>() == 0) {
      return at::trapezoid(tpr, fpr);
    }
    const at::Tensor area = at::full({}, max_fpr, fpr.options());
    const int64_t stop = at::bucketize(area, fpr, /*out_int32=*/false, /*right=*/true).item<int64_t>();
    const at::Tensor weight = (area - fpr[stop - 1]) / (fpr[stop] - fpr[stop - 1]);
    const at::Tensor x = at::cat({fpr.slice(0, 0, stop), area.view({1})});
    const at::Tensor y = at::cat({tpr.slice(0, 0, stop), at::lerp(tpr[stop - 1], tpr[stop], weight).view({1})});
    const at::Tensor min_area = 0.5 * area * area;
    return 0.5 * (1 + (at::trapezoid(y, x) - min_area) / (area - min_area));
  }

  std::string task_;
  ThresholdOptions options_;
  at::Tensor thresholds_, histogram_, invalid_;
  bool updated_ = false;
};

// Calibration error (torchmetrics' calibration_error: 'l1' ECE, 'max' MCE, 'l2' RMS) of the
// binary or multiclass task, in a state of per-bin float64 sums (count, confidence, accuracy) as
// fusedloss.metrics.CalibrationError keeps: it does not grow with the data and merges by addition.
class CalibrationError {
 public:
  // num_classes (multiclass): the classes of preds (N, C); unset, C is taken from the first batch.
  CalibrationError(std::string task, int64_t n_bins = 15, std::string norm = "l1",
                   std::optional<int64_t> ignore_index = std::nullopt,
                   std::optional<int64_t> num_classes = std::nullopt)
      : task_(std::move(task)), norm_(std::move(norm)), n_bins_(n_bins),
        ignore_index_(ignore_index), num_classes_(num_classes) {
    TORCH_CHECK_VALUE(task_ == "binary" || task_ == "multiclass",
                      "fusedloss::metrics::CalibrationError: task must be 'binary' or 'multiclass', got '",
                      task_, "'");
    TORCH_CHECK_VALUE(n_bins_ >= 1, "fusedloss::metrics::CalibrationError: n_bins must be >= 1");
    TORCH_CHECK_VALUE(norm_ == "l1" || norm_ == "l2" || norm_ == "max",
                      "fusedloss::metrics::CalibrationError: norm must be 'l1', 'l2' or 'max', got '",
                      norm_, "'");
    reset();
  }

  // Adds a batch: binary probabilities (N, ...) with targets of the same shape, or multiclass
  // scores (N, C) with targets (N); logits when any counted score is outside [0, 1] (sigmoid /
  // softmax first). Bucketed in the scores' precision, summed in float64, on the data's device
  // (fusedloss::_calibration_bins, as the Python CalibrationError); nothing is read back.
  void update(const at::Tensor& preds, const at::Tensor& target) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fusedloss::_calibration_bins", "")
            .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                      c10::string_view, int64_t,
                                                      std::optional<int64_t>,
                                                      std::optional<int64_t>)>();
    if (task_ == "multiclass" && !num_classes_.has_value() && preds.dim() == 2) {
      num_classes_ = preds.size(1);
    }
    auto [sums, invalid] = op.call(preds, target, task_, n_bins_, num_classes_, ignore_index_);
    if (!updated_) {  // the state follows the data to its device once
      sums_ = sums_.to(sums.device());
      invalid_ = invalid_.to(sums.device());
      updated_ = true;
    }
    sums_.add_(sums.to(sums_.device()));
    invalid_.add_(invalid.to(invalid_.device()));
  }

  void merge(const CalibrationError& other) {
    sums_.add_(other.sums_.to(sums_.device()));
    invalid_.add_(other.invalid_.to(invalid_.device()));
  }
  // Zeros the state where it is (its device stays).
  void reset() {
    sums_ = at::zeros({3, n_bins_ + 1},
                      sums_.defined() ? sums_.options() : at::TensorOptions(at::kDouble));
    invalid_ = at::zeros({}, sums_.options().dtype(at::kLong));
  }

  // Raises a c10::ValueError when targets that are not labels (0/1, or a class in [0, C)) nor
  // ignore_index were added.
  at::Tensor compute() const {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fusedloss::_calibration_error", "")
            .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view)>();
    return op.call(sums_, invalid_, norm_);
  }

  // The state: (3, n_bins + 1) float64 [count, confidence, accuracy][bin].
  const at::Tensor& bin_sums() const { return sums_; }

 private:
  std::string task_, norm_;
  int64_t n_bins_;
  std::optional<int64_t> ignore_index_, num_classes_;
  at::Tensor sums_, invalid_;
  bool updated_ = false;
};

}  // namespace metrics
}  // namespace fusedloss

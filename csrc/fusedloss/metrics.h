#pragma once
// fusedloss::metrics — evaluation metrics on the fused counting kernels, with torchmetrics'
// definitions: functions for one batch, and streaming states (update / compute / reset / merge)
// whose update never waits for a GPU.
//
//   fusedloss::metrics::ClassificationMetrics counts("multiclass", 10);
//   for (auto& [x, y] : batches) counts.update(model->forward(x), y);
//   double f1 = counts.compute("f1").item<double>();

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/arg.h>

#include <cmath>
#include <optional>
#include <string>
#include <tuple>

namespace fusedloss {
namespace metrics {
namespace detail {

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Signature>();
}

using CountsOp = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&,
                                                                const at::Tensor&, c10::string_view,
                                                                int64_t, double, int64_t,
                                                                std::optional<int64_t>);
using MetricOp = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            c10::string_view, c10::string_view, c10::string_view, double, double,
                            int64_t);
using MomentsOp = at::Tensor(const at::Tensor&, const at::Tensor&);
using RegressionOp = at::Tensor(const at::Tensor&, c10::string_view, int64_t, c10::string_view);

// task='multilabel': a metric from per-label counts (L, 2, 2) [label][target][predicted], with
// torchmetrics' multilabel rules, by fusedloss::_counts_metric (the Python API's too).
inline at::Tensor multilabel_metric(const at::Tensor& confusion, const at::Tensor& invalid,
                                    const std::string& metric, const std::string& average,
                                    double beta, double zero_division) {
  if (metric == "confusion_matrix") return confusion;
  static const auto scores =
      op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                    const at::Tensor&, c10::string_view, c10::string_view, double, double, bool)>(
          "fusedloss::_counts_metric");
  const auto count = [&](int64_t target, int64_t predicted) {
    return confusion.select(1, target).select(1, predicted);
  };
  return scores.call(count(1, 1), count(0, 1), count(0, 0), count(1, 0), invalid, metric, average,
                     beta, zero_division, /*multiclass=*/false);
}

}  // namespace detail

struct ClassificationOptions {
  TORCH_ARG(double, threshold) = 0.5;  // binary: on probabilities (logits when outside [0, 1])
  TORCH_ARG(int64_t, top_k) = 1;       // multiclass accuracy
  TORCH_ARG(std::string, average) = "micro";  // "micro" | "macro" | "weighted" | "none"
  TORCH_ARG(std::optional<int64_t>, ignore_index) = std::nullopt;
  TORCH_ARG(double, zero_division) = 0.0;
  TORCH_ARG(double, beta) = 1.0;  // fbeta
};

// The counts of one classification task: a confusion matrix and top-k hits (int64, on the
// device of the data). Every classification metric is computed from them.
class ClassificationMetrics {
 public:
  // task: "binary", "multiclass" or "multilabel" (num_classes: the labels; ignored for binary).
  ClassificationMetrics(std::string task, int64_t num_classes = 2,
                        ClassificationOptions options = {})
      : task_(std::move(task)), num_classes_(num_classes), options_(std::move(options)) {}

  // Adds a batch: preds are scores (N, C, ...) / binary probabilities or logits, or labels;
  // multilabel: scores (N, L, ...) (num_classes = L), each label predicted above the threshold.
  void update(const at::Tensor& preds, const at::Tensor& target) {
    static const auto counts = detail::op<detail::CountsOp>("fusedloss::_classification_counts");
    auto [confusion, hits, invalid] =
        task_ == "multilabel"
            ? multilabel_counts(preds, target)
            : counts.call(preds, target, task_, num_classes_, options_.threshold(),
                          options_.top_k(), options_.ignore_index());
    if (!confusion_.defined()) {
      confusion_ = confusion, hits_ = hits, invalid_ = invalid;
    } else {
      confusion_.add_(confusion), hits_.add_(hits), invalid_.add_(invalid);
    }
  }

  // "accuracy", "precision", "recall", "f1", "fbeta", "confusion_matrix" or "stat_scores".
  at::Tensor compute(const std::string& metric) const {
    static const auto compute = detail::op<detail::MetricOp>("fusedloss::_classification_metric");
    TORCH_CHECK(confusion_.defined(), "fusedloss::metrics: compute() before any update()");
    const bool f1 = metric == "f1";
    if (task_ == "multilabel") {
      return detail::multilabel_metric(confusion_, invalid_, f1 ? "fbeta" : metric,
                                       options_.average(), f1 ? 1.0 : options_.beta(),
                                       options_.zero_division());
    }
    return compute.call(confusion_, hits_, invalid_, f1 ? "fbeta" : metric, task_,
                        options_.average(), f1 ? 1.0 : options_.beta(), options_.zero_division(),
                        metric == "accuracy" ? options_.top_k() : 1);
  }

  void reset() { confusion_ = hits_ = invalid_ = at::Tensor(); }

  // Adds another state of the same task (e.g. from another process) to this one.
  ClassificationMetrics& merge(const ClassificationMetrics& other) {
    TORCH_CHECK(other.task_ == task_ && other.num_classes_ == num_classes_ &&
                    other.options_.top_k() == options_.top_k(),
                "fusedloss::metrics: cannot merge states of different task, num_classes or top_k");
    if (!other.confusion_.defined()) return *this;
    if (!confusion_.defined()) {
      confusion_ = other.confusion_.clone(), hits_ = other.hits_.clone();
      invalid_ = other.invalid_.clone();
    } else {
      confusion_.add_(other.confusion_), hits_.add_(other.hits_), invalid_.add_(other.invalid_);
    }
    return *this;
  }

 private:
  // Per-label counts (L, 2, 2) from the threshold-histogram kernel with one cut just above the
  // threshold: the scores > threshold fall in its upper bin.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> multilabel_counts(const at::Tensor& preds,
                                                                   const at::Tensor& target) const {
    static const auto histogram =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fusedloss::_threshold_histogram", "")
            .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                      const at::Tensor&, c10::string_view, int64_t,
                                                      std::optional<int64_t>)>();
    TORCH_CHECK_VALUE(preds.dim() >= 2 && preds.size(1) == num_classes_ &&
                          preds.sizes() == target.sizes(),
                      "fusedloss::metrics: multilabel expects preds and target of shape (N, ",
                      num_classes_, ", ...), got ", preds.sizes(), " and ", target.sizes());
    const at::Tensor scores = preds.is_floating_point() ? preds : preds.to(at::kFloat);
    const auto rows = [&](const at::Tensor& t) {
      return (t.dim() > 2 ? t.movedim(1, -1) : t).reshape({-1, num_classes_});
    };
    const at::Tensor cut = at::full(
        {1}, std::nextafter(options_.threshold(), INFINITY),
        at::TensorOptions().dtype(at::kDouble).device(preds.device()));
    auto [confusion, invalid] = histogram.call(rows(scores), rows(target), cut, "multilabel",
                                               num_classes_, options_.ignore_index());
    return {confusion, at::zeros({num_classes_}, confusion.options()), invalid};
  }

  std::string task_;
  int64_t num_classes_;
  ClassificationOptions options_;
  at::Tensor confusion_, hits_, invalid_;
};

// Per-output float64 moments of a regression (count, target mean and squared deviations,
// squared and absolute errors): MSE, RMSE, MAE and R^2 from one state.
class RegressionMetrics {
 public:
  // preds and target: (N) or (N, outputs).
  void update(const at::Tensor& preds, const at::Tensor& target) {
    static const auto moments = detail::op<detail::MomentsOp>("fusedloss::_regression_moments");
    merge_moments(moments.call(preds, target));
  }
  // "mean_squared_error", "root_mean_squared_error", "mean_absolute_error" or "r2_score".
  at::Tensor compute(const std::string& metric, int64_t adjusted = 0,
                     const std::string& multioutput = "uniform_average") const {
    static const auto compute = detail::op<detail::RegressionOp>("fusedloss::_regression_metric");
    TORCH_CHECK(moments_.defined(), "fusedloss::metrics: compute() before any update()");
    return compute.call(moments_, metric, adjusted, multioutput);
  }
  void reset() { moments_ = at::Tensor(); }
  RegressionMetrics& merge(const RegressionMetrics& other) {
    if (other.moments_.defined()) merge_moments(other.moments_);
    return *this;
  }

 private:
  void merge_moments(const at::Tensor& batch) {
    static const auto merge = detail::op<at::Tensor(const at::Tensor&, const at::Tensor&)>(
        "fusedloss::_merge_regression_moments");
    moments_ = moments_.defined() ? merge.call(moments_, batch) : batch;
  }
  at::Tensor moments_;
};

// One-batch functions.
inline at::Tensor classification(const std::string& metric, const at::Tensor& preds,
                                 const at::Tensor& target, const std::string& task,
                                 int64_t num_classes = 2, ClassificationOptions options = {}) {
  ClassificationMetrics counts(task, num_classes, std::move(options));
  counts.update(preds, target);
  return counts.compute(metric);
}
inline at::Tensor accuracy(const at::Tensor& preds, const at::Tensor& target,
                           const std::string& task, int64_t num_classes = 2,
                           ClassificationOptions options = {}) {
  return classification("accuracy", preds, target, task, num_classes, std::move(options));
}
inline at::Tensor precision(const at::Tensor& preds, const at::Tensor& target,
                            const std::string& task, int64_t num_classes = 2,
                            ClassificationOptions options = {}) {
  return classification("precision", preds, target, task, num_classes, std::move(options));
}
inline at::Tensor recall(const at::Tensor& preds, const at::Tensor& target, const std::string& task,
                         int64_t num_classes = 2, ClassificationOptions options = {}) {
  return classification("recall", preds, target, task, num_classes, std::move(options));
}
inline at::Tensor f1_score(const at::Tensor& preds, const at::Tensor& target,
                           const std::string& task, int64_t num_classes = 2,
                           ClassificationOptions options = {}) {
  return classification("f1", preds, target, task, num_classes, std::move(options));
}
inline at::Tensor fbeta_score(const at::Tensor& preds, const at::Tensor& target,
                              const std::string& task, int64_t num_classes = 2,
                              ClassificationOptions options = {}) {
  return classification("fbeta", preds, target, task, num_classes, std::move(options));
}
inline at::Tensor confusion_matrix(const at::Tensor& preds, const at::Tensor& target,
                                   const std::string& task, int64_t num_classes = 2,
                                   ClassificationOptions options = {}) {
  return classification("confusion_matrix", preds, target, task, num_classes, std::move(options));
}
inline at::Tensor stat_scores(const at::Tensor& preds, const at::Tensor& target,
                              const std::string& task, int64_t num_classes = 2,
                              ClassificationOptions options = {}) {
  return classification("stat_scores", preds, target, task, num_classes, std::move(options));
}

inline at::Tensor regression(const std::string& metric, const at::Tensor& preds,
                             const at::Tensor& target, int64_t adjusted = 0,
                             const std::string& multioutput = "uniform_average") {
  RegressionMetrics moments;
  moments.update(preds, target);
  return moments.compute(metric, adjusted, multioutput);
}
// MSE and MAE are over all elements (torchmetrics' num_outputs = 1).
inline at::Tensor mean_squared_error(const at::Tensor& preds, const at::Tensor& target,
                                     bool squared = true) {
  return regression(squared ? "mean_squared_error" : "root_mean_squared_error", preds.reshape({-1}),
                    target.reshape({-1}));
}
inline at::Tensor mean_absolute_error(const at::Tensor& preds, const at::Tensor& target) {
  return regression("mean_absolute_error", preds.reshape({-1}), target.reshape({-1}));
}
inline at::Tensor r2_score(const at::Tensor& preds, const at::Tensor& target, int64_t adjusted = 0,
                           const std::string& multioutput = "uniform_average") {
  return regression("r2_score", preds, target, adjusted, multioutput);
}

}  // namespace metrics
}  // namespace fusedloss

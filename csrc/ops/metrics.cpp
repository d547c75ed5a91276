// Operator layer of the metrics: schemas, validation, the layout of predictions for the counting
// engine, and the metrics computed from the counts (torchmetrics' definitions). Updates never
// read anything back from a GPU; bad labels found there are counted and reported by compute.

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "kernels/metric_counts.h"
#include "ops/arguments.h"
#include "ops/zero_division.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;

bool is_binary_task(c10::string_view op, c10::string_view task) {
  TORCH_CHECK_VALUE(task == "binary" || task == "multiclass", "fusedloss.metrics.", op,
                    ": task must be 'binary' or 'multiclass', got '", task, "'");
  return task == "binary";
}

bool is_integral_labels(const Tensor& t) {
  return at::isIntegralType(t.scalar_type(), /*includeBool=*/true);
}

// Checks one update's arguments; returns the spec and the class dimension of score predictions.
ClassificationSpec check_classification(const Tensor& preds, const Tensor& target,
                                        c10::string_view task, int64_t num_classes,
                                        double threshold, int64_t top_k,
                                        std::optional<int64_t> ignore_index) {
  constexpr c10::string_view op = "classification update";
  ClassificationSpec spec;
  spec.binary = is_binary_task(op, task);
  TORCH_CHECK(preds.device() == target.device(),
              "fusedloss.metrics: preds and target must be on "
              "the same device, got preds on ",
              preds.device(), " and target on ", target.device());
  TORCH_CHECK_VALUE(is_integral_labels(target),
                    "fusedloss.metrics: target must hold integer "
                    "class labels, got ",
                    target.scalar_type(), " (a float target is not a class index)");
  spec.has_ignore_index = ignore_index.has_value();
  spec.ignore_index = ignore_index.value_or(0);
  spec.threshold = threshold;
  spec.top_k = top_k;
  const bool scores = preds.is_floating_point();
  TORCH_CHECK_VALUE(scores || is_integral_labels(preds),
                    "fusedloss.metrics: preds must be "
                    "floating scores or integer labels, got ",
                    preds.scalar_type());
  TORCH_CHECK_VALUE(!scores || is_supported_dtype(preds.scalar_type()),
                    "fusedloss.metrics: "
                    "float preds must be float32, float64, float16 or bfloat16, got ",
                    preds.scalar_type());
  spec.preds = scores ? PredictionKind::Scores : PredictionKind::Labels;
  if (spec.binary) {
    spec.num_classes = 2;
    TORCH_CHECK_VALUE(preds.sym_sizes() == target.sym_sizes(),
                      "fusedloss.metrics: binary preds "
                      "of shape ",
                      preds.sym_sizes(), " must have the shape of target ", target.sym_sizes());
    TORCH_CHECK_VALUE(top_k == 1, "fusedloss.metrics: top_k applies to multiclass tasks only");
    TORCH_CHECK_VALUE(threshold >= 0 && threshold <= 1,
                      "fusedloss.metrics: threshold must be in "
                      "[0, 1], got ",
                      threshold);
    return spec;
  }
  TORCH_CHECK_VALUE(num_classes >= 2, "fusedloss.metrics: multiclass needs num_classes >= 2, got ",
                    num_classes);
  spec.num_classes = num_classes;
  if (scores) {
    TORCH_CHECK_VALUE(
        preds.dim() == target.dim() + 1 && preds.dim() >= 2 && preds.sym_size(1) == num_classes,
        "fusedloss.metrics: multiclass float preds must be scores (N, C, ...) "
        "with C = num_classes (",
        num_classes, ") and target (N, ...); got preds ", preds.sym_sizes(), " and target ",
        target.sym_sizes());
    c10::SymDimVector expected(preds.sym_sizes().begin(), preds.sym_sizes().end());
    expected.erase(expected.begin() + 1);
    TORCH_CHECK_VALUE(target.sym_sizes() == c10::SymIntArrayRef(expected),
                      "fusedloss.metrics: "
                      "target of shape ",
                      target.sym_sizes(), " does not match preds of shape ", preds.sym_sizes(),
                      "; expected ", c10::SymIntArrayRef(expected));
    TORCH_CHECK_VALUE(top_k >= 1 && top_k <= num_classes,
                      "fusedloss.metrics: top_k must be in "
                      "[1, num_classes], got ",
                      top_k);
  } else {
    TORCH_CHECK_VALUE(preds.sym_sizes() == target.sym_sizes(),
                      "fusedloss.metrics: label preds "
                      "of shape ",
                      preds.sym_sizes(), " must have the shape of target ", target.sym_sizes());
    TORCH_CHECK_VALUE(top_k == 1, "fusedloss.metrics: top_k > 1 needs score preds (N, C)");
  }
  return spec;
}

using CountsEngine = void (*)(const ClassificationSpec&, const ClassificationCounts&);

// On the CPU a bad label is an error right away (reading it costs nothing); on CUDA it is counted
// and compute() reports it, so that update never synchronizes.
void raise_on_bad_labels_now(const ClassificationCounts& io, const ClassificationSpec& spec) {
  if (!io.invalid.device().is_cpu() || io.invalid.item<int64_t>() == 0) return;
  Tensor valid = io.target.ge(0).logical_and_(io.target.lt(spec.num_classes));
  if (spec.has_ignore_index) valid.logical_or_(io.target.eq(spec.ignore_index));
  if (!valid.all().item<bool>()) {
    const int64_t at = first_true_position(valid.logical_not());
    TORCH_CHECK_VALUE(false, "fusedloss.metrics: target ", io.target[at].item<int64_t>(),
                      " at position ", at, " is not a class in [0, ", spec.num_classes, ")",
                      spec.has_ignore_index ? " nor ignore_index" : "");
  }
  const Tensor bad = io.preds.lt(0).logical_or_(io.preds.ge(spec.num_classes));
  const int64_t at = first_true_position(bad);
  TORCH_CHECK_VALUE(false, "fusedloss.metrics: predicted label ", io.preds[at].item<int64_t>(),
                    " at position ", at, " is not a class in [0, ", spec.num_classes, ")");
}

template <CountsEngine engine>
std::tuple<Tensor, Tensor, Tensor> classification_counts_on_device(
    const Tensor& preds, const Tensor& target, c10::string_view task, int64_t num_classes,
    double threshold, int64_t top_k, std::optional<int64_t> ignore_index) {
  const ClassificationSpec spec =
      check_classification(preds, target, task, num_classes, threshold, top_k, ignore_index);
  const int64_t C = spec.num_classes;
  const auto counts = target.options().dtype(at::kLong);
  ClassificationCounts io;
  io.target = target.reshape({-1}).to(at::kLong).contiguous();
  if (spec.preds == PredictionKind::Labels) {
    io.preds = preds.reshape({-1}).to(at::kLong).contiguous();
  } else if (spec.binary) {
    io.preds = preds.reshape({-1}).contiguous();
  } else {
    Tensor rows = preds.dim() > 2 ? preds.movedim(1, -1) : preds;
    io.preds = rows.reshape({-1, C}).contiguous();
  }
  io.confusion = spec.binary ? at::zeros({2, 2, 2}, counts) : at::zeros({C, C}, counts);
  io.top_k_hits = at::zeros({C}, counts);
  io.invalid = at::zeros({}, counts);
  io.outside_unit = at::zeros({}, counts);
  engine(spec, io);
  raise_on_bad_labels_now(io, spec);
  Tensor confusion = io.confusion;
  if (spec.binary) {
    if (spec.preds == PredictionKind::Scores) {
      // Scores outside [0, 1] in this batch mean logits: torchmetrics applies a sigmoid then.
      confusion = at::where(io.outside_unit.gt(0), io.confusion[1], io.confusion[0]);
    } else {
      confusion = io.confusion[0];
    }
    io.top_k_hits = confusion.diagonal();
  }
  return {confusion, io.top_k_hits.contiguous(), io.invalid};
}

std::tuple<Tensor, Tensor, Tensor> classification_counts_meta(
    const Tensor& preds, const Tensor& target, c10::string_view task, int64_t num_classes,
    double threshold, int64_t top_k, std::optional<int64_t> ignore_index) {
  const ClassificationSpec spec =
      check_classification(preds, target, task, num_classes, threshold, top_k, ignore_index);
  const auto counts = target.options().dtype(at::kLong);
  const int64_t C = spec.num_classes;
  return {at::empty({C, C}, counts), at::empty({C}, counts), at::empty({}, counts)};
}

// torchmetrics' averaging of per-class scores: 'none' keeps them; 'weighted' by support;
// 'macro' over the classes that occur (in target or predictions; for top-k: in target).
Tensor average_classes(const Tensor& score, c10::string_view average, const Tensor& tp,
                       const Tensor& fp, const Tensor& fn, int64_t top_k) {
  if (average == "none") return score;
  Tensor weights;
  if (average == "weighted") {
    weights = tp.add(fn);
  } else {
    const Tensor occurs = top_k == 1 ? tp.add(fp).add(fn).ne(0) : tp.add(fn).ne(0);
    weights = occurs.to(score.scalar_type());
  }
  return divide_or(weights.mul(score), weights.sum(), 0.0).sum();
}

Tensor metric_of_counts(const Tensor& confusion, const Tensor& top_k_hits, c10::string_view metric,
                        c10::string_view task, c10::string_view average, double beta,
                        double zero_division, int64_t top_k) {
  const bool binary = is_binary_task(metric, task);
  if (metric == "confusion_matrix") return confusion;
  const Tensor m = confusion.to(at::kDouble);
  Tensor tp, fp, fn, tn;
  if (binary) {
    tp = m[1][1], fp = m[0][1], fn = m[1][0], tn = m[0][0];
  } else {
    tp = m.diagonal();
    fn = m.sum(1).sub(tp);
    fp = m.sum(0).sub(tp);
    tn = m.sum().sub(tp).sub(fp).sub(fn);
  }
  if (metric == "stat_scores") {
    Tensor res = at::stack({tp, fp, tn, fn, tp.add(fn)}, -1);
    if (binary || average == "none") return res.to(at::kLong);
    if (average == "micro") return res.sum(0).to(at::kLong);
    if (average == "macro") return res.mean(0).to(at::kFloat);
    const Tensor w = tp.add(fn);
    return res.mul(w.div(w.sum()).unsqueeze(1)).sum(0).to(at::kFloat);
  }
  TORCH_CHECK_VALUE(top_k == 1 || (metric == "accuracy" && !binary), "fusedloss.metrics.", metric,
                    ": top_k > 1 is supported by multiclass accuracy only");
  Tensor score;
  if (metric == "accuracy") {
    if (binary) return divide_or(tp.add(tn), m.sum(), 0.0).to(at::kFloat);
    const Tensor hits = top_k_hits.to(at::kDouble);
    const Tensor support = tp.add(fn);
    if (average == "micro") return divide_or(hits.sum(), support.sum(), 0.0).to(at::kFloat);
    // For top-k, tp is the hits and fn the misses of the target class.
    const Tensor tp_k = top_k == 1 ? tp : hits;
    score = divide_or(hits, support, 0.0);
    return average_classes(score, average, tp_k, fp, support.sub(tp_k), top_k).to(at::kFloat);
  }
  if (metric == "precision" || metric == "recall") {
    const Tensor& other = metric == "precision" ? fp : fn;
    if (binary || average == "micro") {
      const Tensor t = binary ? tp : tp.sum(), o = binary ? other : other.sum();
      return divide_or(t, t.add(o), zero_division).to(at::kFloat);
    }
    score = divide_or(tp, tp.add(other), zero_division);
  } else {
    TORCH_CHECK_VALUE(metric == "fbeta", "fusedloss.metrics: unknown metric '", metric, "'");
    TORCH_CHECK_VALUE(beta > 0, "fusedloss.metrics.fbeta_score: beta must be > 0, got ", beta);
    const double b2 = beta * beta;
    const auto f = [&](const Tensor& t, const Tensor& p, const Tensor& n) {
      return divide_or(t.mul(1 + b2), t.mul(1 + b2).add(n.mul(b2)).add(p), zero_division);
    };
    if (binary) return f(tp, fp, fn).to(at::kFloat);
    if (average == "micro") return f(tp.sum(), fp.sum(), fn.sum()).to(at::kFloat);
    score = f(tp, fp, fn);
  }
  return average_classes(score, average, tp, fp, fn, 1).to(at::kFloat);
}

Tensor classification_metric(const Tensor& confusion, const Tensor& top_k_hits,
                             const Tensor& invalid, c10::string_view metric, c10::string_view task,
                             c10::string_view average, double beta, double zero_division,
                             int64_t top_k) {
  TORCH_CHECK_VALUE(
      average == "micro" || average == "macro" || average == "weighted" || average == "none",
      "fusedloss.metrics.", metric,
      ": average must be 'micro', 'macro', 'weighted' or 'none', got '", average, "'");
  const bool traced = holds_no_values(invalid);
  if (!traced) {
    // Reading the count synchronizes a GPU: compute() is where a number is produced anyway.
    const int64_t bad = invalid.item<int64_t>();
    TORCH_CHECK_VALUE(bad == 0, "fusedloss.metrics.", metric, ": ", bad,
                      " target or predicted labels were not classes in [0, ", confusion.size(0),
                      ") (nor ignore_index); the counts are not usable");
  }
  const Tensor result =
      metric_of_counts(confusion, top_k_hits, metric, task, average, beta, zero_division, top_k);
  return traced ? nan_where_invalid(result, invalid) : result;
}

// --- Regression.

using MomentsEngine = void (*)(const RegressionMoments&);
using PartitionsFn = int64_t (*)(int64_t);

// Merges moment sets along dim 0 ((P, D, 5) -> (D, 5)) with the pairwise-update formula written
// in closed form: mean = sum(n_i mean_i) / n, M2 = sum(M2_i) + sum(n_i (mean_i - mean)^2).
Tensor merge_moments(const Tensor& parts) {
  const Tensor n_i = parts.select(-1, kCount), mean_i = parts.select(-1, kTargetMean);
  const Tensor n = n_i.sum(0);
  const Tensor mean = divide_or(n_i.mul(mean_i).sum(0), n, 0.0);
  const Tensor m2 =
      parts.select(-1, kTargetM2).sum(0).add(n_i.mul(mean_i.sub(mean.unsqueeze(0)).pow(2)).sum(0));
  return at::stack({n, mean, m2, parts.select(-1, kSquaredError).sum(0),
                    parts.select(-1, kAbsoluteError).sum(0)},
                   -1);
}

void check_regression(const Tensor& preds, const Tensor& target) {
  TORCH_CHECK_VALUE(preds.sym_sizes() == target.sym_sizes(), "fusedloss.metrics: preds of shape ",
                    preds.sym_sizes(), " and target of shape ", target.sym_sizes(),
                    " must have the same shape");
  TORCH_CHECK_VALUE(preds.dim() == 1 || preds.dim() == 2,
                    "fusedloss.metrics: regression preds "
                    "and target must be (N) or (N, outputs), got ",
                    preds.sym_sizes());
  TORCH_CHECK(preds.device() == target.device(),
              "fusedloss.metrics: preds and target must be on "
              "the same device, got ",
              preds.device(), " and ", target.device());
  TORCH_CHECK_VALUE(preds.is_floating_point() && target.is_floating_point(),
                    "fusedloss.metrics: regression preds and target must be floating point, got ",
                    preds.scalar_type(), " and ", target.scalar_type());
}

template <MomentsEngine engine, PartitionsFn partitions>
Tensor regression_moments_on_device(const Tensor& preds, const Tensor& target) {
  check_regression(preds, target);
  const auto dtype = c10::promoteTypes(preds.scalar_type(), target.scalar_type());
  TORCH_CHECK_VALUE(is_supported_dtype(dtype), "fusedloss.metrics: unsupported dtype ", dtype);
  RegressionMoments io;
  const int64_t columns = preds.dim() == 2 ? preds.size(1) : 1;
  io.preds = preds.to(dtype).reshape({-1, columns}).contiguous();
  io.target = target.to(dtype).reshape({-1, columns}).contiguous();
  io.partials = at::zeros({partitions(io.preds.size(0)), columns, kMomentCount},
                          preds.options().dtype(at::kDouble));
  if (io.preds.numel() > 0) engine(io);
  return merge_moments(io.partials);
}

Tensor regression_moments_meta(const Tensor& preds, const Tensor& target) {
  check_regression(preds, target);
  const int64_t columns = preds.dim() == 2 ? preds.size(1) : 1;
  return at::empty({columns, kMomentCount}, preds.options().dtype(at::kDouble));
}

Tensor merge_regression_moments(const Tensor& a, const Tensor& b) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), "fusedloss.metrics: cannot merge moments of shapes ",
                    a.sizes(), " and ", b.sizes(), " (a different number of outputs)");
  return merge_moments(at::stack({a, b}));
}

Tensor regression_metric(const Tensor& moments, c10::string_view metric, int64_t adjusted,
                         c10::string_view multioutput) {
  const Tensor n = moments.select(-1, kCount);
  if (metric == "mean_squared_error" || metric == "root_mean_squared_error" ||
      metric == "mean_absolute_error") {
    const Tensor sum =
        moments.select(-1, metric == "mean_absolute_error" ? kAbsoluteError : kSquaredError);
    // Per output for 'raw_values' (torchmetrics' num_outputs > 1), else over all elements.
    Tensor value = multioutput == "raw_values" ? sum.div(n) : sum.sum().div(n.sum());
    if (metric == "root_mean_squared_error") value = value.sqrt();
    return value.to(at::kFloat);
  }
  TORCH_CHECK_VALUE(metric == "r2_score", "fusedloss.metrics: unknown metric '", metric, "'");
  TORCH_CHECK_VALUE(adjusted >= 0, "fusedloss.metrics.r2_score: adjusted must be >= 0, got ",
                    adjusted);
  const int64_t count = static_cast<int64_t>(n[0].item<double>());
  TORCH_CHECK_VALUE(count >= 2, "fusedloss.metrics.r2_score: needs at least two samples, got ",
                    count);
  const Tensor tss = moments.select(-1, kTargetM2), rss = moments.select(-1, kSquaredError);
  // Near-constant targets and perfect fits as torchmetrics: |x| <= 1e-4 counts as zero.
  const Tensor rss_nonzero = rss.abs().gt(1e-4), tss_nonzero = tss.abs().gt(1e-4);
  Tensor raw = at::where(rss_nonzero.logical_and(tss_nonzero), rss.div(tss).neg().add(1),
                         at::ones_like(rss));
  raw = at::where(rss_nonzero.logical_and(tss_nonzero.logical_not()), at::zeros_like(raw), raw);
  Tensor r2;
  if (multioutput == "raw_values") {
    r2 = raw;
  } else if (multioutput == "uniform_average") {
    r2 = raw.mean();
  } else {
    TORCH_CHECK_VALUE(multioutput == "variance_weighted",
                      "fusedloss.metrics.r2_score: "
                      "multioutput must be 'raw_values', 'uniform_average' or "
                      "'variance_weighted', got '",
                      multioutput, "'");
    r2 = tss.div(tss.sum()).mul(raw).sum();
  }
  if (adjusted != 0) {
    if (adjusted >= count - 1) {
      TORCH_WARN("fusedloss.metrics.r2_score: adjusted=", adjusted, " needs more than ",
                 adjusted + 1, " samples (got ", count, "); returning the plain r2 score");
    } else {
      r2 = r2.neg()
               .add(1)
               .mul(static_cast<double>(count - 1) / static_cast<double>(count - adjusted - 1))
               .neg()
               .add(1);
    }
  }
  return r2.to(at::kFloat);
}

}  // namespace
}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "_classification_counts(Tensor preds, Tensor target, str task, int num_classes=2, "
      "float threshold=0.5, int top_k=1, int? ignore_index=None) "
      "-> (Tensor confusion, Tensor top_k_hits, Tensor invalid)");
  m.def(
      "_classification_metric(Tensor confusion, Tensor top_k_hits, Tensor invalid, str metric, "
      "str task, str average=\"micro\", float beta=1.0, float zero_division=0.0, int top_k=1) "
      "-> Tensor");
  m.def("_regression_moments(Tensor preds, Tensor target) -> Tensor");
  m.def("_merge_regression_moments(Tensor a, Tensor b) -> Tensor");
  m.def(
      "_regression_metric(Tensor moments, str metric, int adjusted=0, "
      "str multioutput=\"uniform_average\") -> Tensor");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("_classification_metric", TORCH_FN(fusedloss::ops::classification_metric));
  m.impl("_merge_regression_moments", TORCH_FN(fusedloss::ops::merge_regression_moments));
  m.impl("_regression_metric", TORCH_FN(fusedloss::ops::regression_metric));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  using namespace fusedloss;
  m.impl("_classification_counts",
         TORCH_FN(ops::classification_counts_on_device<cpu::classification_counts_kernel>));
  m.impl("_regression_moments",
         TORCH_FN((ops::regression_moments_on_device<cpu::regression_moments_kernel,
                                                     cpu::regression_partitions>)));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  using namespace fusedloss;
  m.impl("_classification_counts",
         TORCH_FN(ops::classification_counts_on_device<cuda::classification_counts_kernel>));
  m.impl("_regression_moments",
         TORCH_FN((ops::regression_moments_on_device<cuda::regression_moments_kernel,
                                                     cuda::regression_partitions>)));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_classification_counts", TORCH_FN(fusedloss::ops::classification_counts_meta));
  m.impl("_regression_moments", TORCH_FN(fusedloss::ops::regression_moments_meta));
}

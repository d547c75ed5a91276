// Operator layer of the binned threshold metrics: checks one update's arguments (once, for every
// backend, Meta included), lays out the scores and targets, decides on the device whether the
// batch is logits (torchmetrics' rule: any score outside [0, 1]; no read-back), and runs the
// histogram engine (kernels/threshold_histogram.h). The curves and areas are computed from the
// (small) histogram in Python (fusedloss/threshold_metrics.py).

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "kernels/threshold_histogram.h"
#include "ops/arguments.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
constexpr const char* kOp = "fusedloss.metrics";

ThresholdHistogramSpec check_update(const Tensor& preds, const Tensor& target,
                                    const Tensor& thresholds, c10::string_view task,
                                    int64_t num_classes, std::optional<int64_t> ignore_index) {
  ThresholdHistogramSpec spec;
  if (task == "binary") {
    spec.task = ThresholdTask::Binary;
  } else if (task == "multiclass") {
    spec.task = ThresholdTask::Multiclass;
  } else {
    TORCH_CHECK_VALUE(task == "multilabel", kOp, ": task must be 'binary', 'multiclass' or ",
                      "'multilabel', got '", task, "'");
    spec.task = ThresholdTask::Multilabel;
  }
  spec.has_ignore_index = ignore_index.has_value();
  spec.ignore_index = ignore_index.value_or(0);
  TORCH_CHECK(preds.device() == target.device() && preds.device() == thresholds.device(), kOp,
              ": preds, target and thresholds must be on one device, got ", preds.device(), ", ",
              target.device(), " and ", thresholds.device());
  TORCH_CHECK_VALUE(at::isFloatingType(preds.scalar_type()) &&
                        is_supported_dtype(preds.scalar_type()),
                    kOp, ": preds must hold float32, float64, float16 or bfloat16 scores, got ",
                    preds.scalar_type());
  TORCH_CHECK_VALUE(!at::isFloatingType(target.scalar_type()) &&
                        !at::isComplexType(target.scalar_type()),
                    kOp, ": target must hold integer labels, got ", target.scalar_type());
  TORCH_CHECK_VALUE(thresholds.dim() == 1 && thresholds.scalar_type() == at::kDouble, kOp,
                    ": thresholds must be a 1-D float64 tensor, got ", thresholds.scalar_type(),
                    " of shape ", thresholds.sym_sizes());
  if (spec.task == ThresholdTask::Multiclass) {
    TORCH_CHECK_VALUE(num_classes >= 2, kOp, ": multiclass needs num_classes >= 2, got ",
                      num_classes);
    TORCH_CHECK_VALUE(preds.dim() == 2 && preds.sym_size(1) == num_classes &&
                          target.dim() == 1 && target.sym_size(0) == preds.sym_size(0),
                      kOp, ": multiclass expects preds (N, ", num_classes,
                      ") and target (N), got preds of shape ", preds.sym_sizes(),
                      " and target of shape ", target.sym_sizes());
    spec.num_classes = num_classes;
  } else if (spec.task == ThresholdTask::Multilabel) {
    TORCH_CHECK_VALUE(num_classes >= 1, kOp, ": multilabel needs num_labels >= 1, got ",
                      num_classes);
    TORCH_CHECK_VALUE(preds.dim() == 2 && preds.sym_size(1) == num_classes &&
                          target.sym_sizes() == preds.sym_sizes(),
                      kOp, ": multilabel expects preds and target of shape (N, ", num_classes,
                      "), got ", preds.sym_sizes(), " and ", target.sym_sizes());
    spec.num_classes = num_classes;
  } else {
    TORCH_CHECK_VALUE(preds.sym_sizes() == target.sym_sizes(), kOp,
                      ": binary expects preds and target of one shape, got ", preds.sym_sizes(),
                      " and ", target.sym_sizes());
  }
  return spec;
}

// On the CPU a bad label is an error at once (reading it costs nothing); on CUDA it is counted
// and reported when the metric is computed.
void raise_on_bad_labels(const Tensor& target, const ThresholdHistogramSpec& spec) {
  Tensor bad = spec.task == ThresholdTask::Multiclass
                   ? target.lt(0).logical_or_(target.ge(spec.num_classes))
                   : target.ne(0).logical_and_(target.ne(1));
  if (spec.has_ignore_index) bad.logical_and_(target.ne(spec.ignore_index));
  if (!bad.any().item<bool>()) return;
  const int64_t at = first_true_position(bad);
  TORCH_CHECK_VALUE(false, kOp, ": target ", target.reshape({-1})[at].item<int64_t>(),
                    " at position ", at, " is not a label: expected ",
                    spec.task == ThresholdTask::Multiclass ? "a class in [0, num_classes)"
                                                           : "0 or 1",
                    spec.has_ignore_index ? " or ignore_index" : "");
}

using HistogramEngine = void (*)(const ThresholdHistogramSpec&, const ThresholdHistogram&);

template <HistogramEngine engine>
std::tuple<Tensor, Tensor> threshold_histogram(const Tensor& preds, const Tensor& target,
                                               const Tensor& thresholds, c10::string_view task,
                                               int64_t num_classes,
                                               std::optional<int64_t> ignore_index) {
  const ThresholdHistogramSpec spec =
      check_update(preds, target, thresholds, task, num_classes, ignore_index);
  const int64_t C = spec.num_classes;
  const auto counts = target.options().dtype(at::kLong);
  ThresholdHistogram io;
  io.preds = preds.reshape(spec.task == ThresholdTask::Binary ? at::IntArrayRef{-1}
                                                              : at::IntArrayRef{-1, C})
                 .contiguous();
  io.target = (spec.task == ThresholdTask::Multilabel ? target.reshape({-1, C})
                                                     : target.reshape({-1}))
                  .to(at::kLong)
                  .contiguous();
  io.thresholds = thresholds.contiguous();
  if (target.is_cpu()) raise_on_bad_labels(io.target, spec);
  // torchmetrics' rule, per batch: any score outside [0, 1] means logits (NaN is neither). For
  // binary and multiclass it looks at the samples not ignored only (multilabel: at all).
  Tensor outside = io.preds.lt(0).logical_or_(io.preds.gt(1));
  if (spec.has_ignore_index && spec.task != ThresholdTask::Multilabel) {
    if (spec.task == ThresholdTask::Multiclass) outside = outside.any(1);
    outside.logical_and_(io.target.ne(spec.ignore_index));
  }
  io.logits = outside.any();
  io.histogram = at::zeros({C, 2, thresholds.size(0) + 1}, counts);
  io.invalid = at::zeros({}, counts);
  engine(spec, io);
  return {io.histogram, io.invalid};
}

std::tuple<Tensor, Tensor> threshold_histogram_meta(const Tensor& preds, const Tensor& target,
                                                    const Tensor& thresholds,
                                                    c10::string_view task, int64_t num_classes,
                                                    std::optional<int64_t> ignore_index) {
  const ThresholdHistogramSpec spec =
      check_update(preds, target, thresholds, task, num_classes, ignore_index);
  const auto counts = target.options().dtype(at::kLong);
  return {at::empty_symint({c10::SymInt(spec.num_classes), 2, thresholds.sym_size(0) + 1}, counts),
          at::empty({}, counts)};
}

}  // namespace
}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "_threshold_histogram(Tensor preds, Tensor target, Tensor thresholds, str task, "
      "int num_classes=1, int? ignore_index=None) -> (Tensor histogram, Tensor invalid)");
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_threshold_histogram",
         TORCH_FN(fusedloss::ops::threshold_histogram<fusedloss::cpu::threshold_histogram_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_threshold_histogram",
         TORCH_FN(fusedloss::ops::threshold_histogram<fusedloss::cuda::threshold_histogram_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_threshold_histogram", TORCH_FN(fusedloss::ops::threshold_histogram_meta));
}

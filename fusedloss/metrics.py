"""Evaluation metrics on fused counting kernels, with torchmetrics' names, arguments and results.

Classification (task='binary', 'multiclass' or 'multilabel'): one pass over preds and target
counts a confusion matrix (int64; per label (L, 2, 2) for multilabel) and top-k hits; accuracy, precision, recall, F-scores and stat scores
all come from those counts. Binary float preds are probabilities, or logits when a batch has
values outside [0, 1] (a sigmoid is applied then, as torchmetrics does), thresholded at
`threshold`. Multiclass preds are scores (N, C, ...) (argmax, or top-k for accuracy) or labels.

Regression: one pass gathers per-output float64 moments (count, target mean and squared
deviations, squared and absolute errors), merged with a numerically stable formula; R^2 never
forms sum(y^2) - sum(y)^2 / n.

The streaming classes are torch.nn.Modules that keep those counts in buffers (.to(), state_dict):
update() adds a batch (on a GPU without waiting for it), compute() gives the metric, reset()
clears, merge(other) adds another instance's state (e.g. from another process), and calling the
module adds a batch and returns that batch's value. Out-of-range labels raise ValueError: on the CPU in update, on CUDA in compute.

Threshold-free metrics (precision_recall_curve, roc, auroc, average_precision and their classes,
binned or exact, binary / multiclass / multilabel) are in fusedloss.threshold_metrics and exported
here.
"""

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from . import multilabel_metrics as multilabel
from . import samplewise_metrics as samplewise
from ._state import StreamingState
from .calibration import CalibrationError, calibration_error
from .metric_collection import MetricCollection
from .threshold_metrics import (AUROC, ROC, AveragePrecision, PrecisionRecallCurve, auroc,
                                average_precision, precision_recall_curve, roc)

__all__ = [
    "accuracy", "precision", "recall", "f1_score", "fbeta_score", "confusion_matrix",
    "stat_scores", "r2_score", "mean_squared_error", "mean_absolute_error",
    "ClassificationCounts", "Accuracy", "Precision", "Recall", "F1Score", "FBetaScore",
    "ConfusionMatrix", "StatScores", "RegressionMoments", "MeanSquaredError",
    "MeanAbsoluteError", "R2Score",
    "precision_recall_curve", "roc", "auroc", "average_precision",
    "PrecisionRecallCurve", "ROC", "AUROC", "AveragePrecision",
    "calibration_error", "CalibrationError", "MetricCollection",
]


def _num_classes(task: str, num_classes: Optional[int]) -> int:
    if task == "multiclass":
        if num_classes is None:
            raise ValueError("fusedloss.metrics: task='multiclass' needs num_classes")
        return num_classes
    return 2


def _counts(preds: Tensor, target: Tensor, task: str, num_classes: Optional[int], threshold: float,
            top_k: int, ignore_index: Optional[int]) -> Tuple[Tensor, Tensor, Tensor]:
    return torch.ops.fusedloss._classification_counts(
        preds, target, task, _num_classes(task, num_classes), threshold, top_k, ignore_index)


def _check_multidim(multidim_average: str, top_k: int = 1) -> bool:
    """True for 'samplewise'."""
    if multidim_average not in ("global", "samplewise"):
        raise ValueError(f"fusedloss.metrics: multidim_average must be 'global' or 'samplewise', got "
                         f"'{multidim_average}'")
    if multidim_average == "samplewise" and top_k != 1:
        raise ValueError("fusedloss.metrics: multidim_average='samplewise' takes top_k=1 only")
    return multidim_average == "samplewise"


def _classification(metric: str, preds: Tensor, target: Tensor, task: str, num_classes: Optional[int],
                    threshold: float, average: Optional[str], top_k: int, ignore_index: Optional[int],
                    beta: float = 1.0, zero_division: float = 0.0, num_labels: Optional[int] = None,
                    multidim_average: str = "global") -> Tensor:
    if task not in ("binary", "multiclass", "multilabel"):
        raise ValueError(f"fusedloss.metrics: task must be 'binary', 'multiclass' or 'multilabel', got '{task}'")
    if _check_multidim(multidim_average, top_k):
        state, invalid = samplewise.counts(preds, target, task, num_classes, num_labels, threshold, ignore_index)
        return samplewise.reduce(state, invalid, metric, task, average, beta, zero_division)
    if task == "multilabel":
        confusion, invalid = multilabel.counts(preds, target, num_labels, threshold, ignore_index)
        return multilabel.reduce(confusion, invalid, metric, average, beta, zero_division)
    confusion, hits, invalid = _counts(preds, target, task, num_classes, threshold, top_k, ignore_index)
    return torch.ops.fusedloss._classification_metric(
        confusion, hits, invalid, metric, task, "none" if average is None else average, beta,
        zero_division, top_k)


def accuracy(preds: Tensor, target: Tensor, task: str, threshold: float = 0.5,
             num_classes: Optional[int] = None, average: Optional[str] = "micro", top_k: int = 1,
             ignore_index: Optional[int] = None, num_labels: Optional[int] = None,
             multidim_average: str = "global") -> Tensor:
    """Share of correct predictions (multiclass: of the target in the top_k scores; multilabel: of
    the (sample, label) decisions); multidim_average='samplewise': one value per sample."""
    return _classification("accuracy", preds, target, task, num_classes, threshold, average, top_k,
                           ignore_index, num_labels=num_labels, multidim_average=multidim_average)


def precision(preds: Tensor, target: Tensor, task: str, threshold: float = 0.5,
              num_classes: Optional[int] = None, average: Optional[str] = "micro",
              ignore_index: Optional[int] = None, zero_division: float = 0.0,
              num_labels: Optional[int] = None, multidim_average: str = "global") -> Tensor:
    """tp / (tp + fp); zero_division where nothing was predicted positive."""
    return _classification("precision", preds, target, task, num_classes, threshold, average, 1,
                           ignore_index, zero_division=zero_division, num_labels=num_labels,
                           multidim_average=multidim_average)


def recall(preds: Tensor, target: Tensor, task: str, threshold: float = 0.5,
           num_classes: Optional[int] = None, average: Optional[str] = "micro",
           ignore_index: Optional[int] = None, zero_division: float = 0.0,
           num_labels: Optional[int] = None, multidim_average: str = "global") -> Tensor:
    """tp / (tp + fn); zero_division where a class has no positives."""
    return _classification("recall", preds, target, task, num_classes, threshold, average, 1,
                           ignore_index, zero_division=zero_division, num_labels=num_labels,
                           multidim_average=multidim_average)


def fbeta_score(preds: Tensor, target: Tensor, task: str, beta: float = 1.0, threshold: float = 0.5,
                num_classes: Optional[int] = None, average: Optional[str] = "micro",
                ignore_index: Optional[int] = None, zero_division: float = 0.0,
                num_labels: Optional[int] = None, multidim_average: str = "global") -> Tensor:
    """(1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp)."""
    return _classification("fbeta", preds, target, task, num_classes, threshold, average, 1,
                           ignore_index, beta=beta, zero_division=zero_division, num_labels=num_labels,
                           multidim_average=multidim_average)


def f1_score(preds: Tensor, target: Tensor, task: str, threshold: float = 0.5,
             num_classes: Optional[int] = None, average: Optional[str] = "micro",
             ignore_index: Optional[int] = None, zero_division: float = 0.0,
             num_labels: Optional[int] = None, multidim_average: str = "global") -> Tensor:
    """Harmonic mean of precision and recall (fbeta_score with beta = 1)."""
    return fbeta_score(preds, target, task, 1.0, threshold, num_classes, average, ignore_index,
                       zero_division, num_labels, multidim_average)


def confusion_matrix(preds: Tensor, target: Tensor, task: str, threshold: float = 0.5,
                     num_classes: Optional[int] = None, ignore_index: Optional[int] = None,
                     num_labels: Optional[int] = None) -> Tensor:
    """int64 counts, rows = target class, columns = predicted class (multilabel: (L, 2, 2))."""
    return _classification("confusion_matrix", preds, target, task, num_classes, threshold, "micro",
                           1, ignore_index, num_labels=num_labels)


def stat_scores(preds: Tensor, target: Tensor, task: str, threshold: float = 0.5,
                num_classes: Optional[int] = None, average: Optional[str] = "micro",
                ignore_index: Optional[int] = None, num_labels: Optional[int] = None,
                multidim_average: str = "global") -> Tensor:
    """[tp, fp, tn, fn, support], per class (label) for average='none'."""
    return _classification("stat_scores", preds, target, task, num_classes, threshold, average, 1,
                           ignore_index, num_labels=num_labels, multidim_average=multidim_average)


def _moments(preds: Tensor, target: Tensor, num_outputs: int = 1) -> Tensor:
    """Moments over all elements (num_outputs=1) or per output column (N, num_outputs)."""
    if num_outputs == 1:
        preds, target = preds.reshape(-1), target.reshape(-1)
    else:
        preds, target = preds.reshape(-1, num_outputs), target.reshape(-1, num_outputs)
    return torch.ops.fusedloss._regression_moments(preds, target)


def _per_output(num_outputs: int) -> str:
    return "raw_values" if num_outputs > 1 else "uniform_average"


def mean_squared_error(preds: Tensor, target: Tensor, squared: bool = True,
                       num_outputs: int = 1) -> Tensor:
    """Mean of (preds - target)^2 over all elements (one value per output for num_outputs > 1);
    squared=False gives its root (RMSE)."""
    metric = "mean_squared_error" if squared else "root_mean_squared_error"
    return torch.ops.fusedloss._regression_metric(_moments(preds, target, num_outputs), metric, 0,
                                                  _per_output(num_outputs))


def mean_absolute_error(preds: Tensor, target: Tensor, num_outputs: int = 1) -> Tensor:
    """Mean of |preds - target| over all elements (one value per output for num_outputs > 1)."""
    return torch.ops.fusedloss._regression_metric(_moments(preds, target, num_outputs),
                                                  "mean_absolute_error", 0, _per_output(num_outputs))


def r2_score(preds: Tensor, target: Tensor, adjusted: int = 0,
             multioutput: str = "uniform_average") -> Tensor:
    """Coefficient of determination 1 - SS_res / SS_tot per output of (N) or (N, outputs); adjusted
    for `adjusted` regressors; multioutput 'raw_values' | 'uniform_average' | 'variance_weighted'."""
    return torch.ops.fusedloss._regression_metric(
        torch.ops.fusedloss._regression_moments(preds, target), "r2_score", adjusted, multioutput)


class ClassificationCounts(StreamingState):
    """The shared state of the classification metrics of one task: a confusion matrix and top-k
    hits (int64 buffers), from which every metric is computed. A torch.nn.Module: update,
    compute, reset, merge, and forward (calling it) adds a batch and returns that batch's value."""

    metric = "accuracy"
    _additive_buffers = ("confusion", "top_k_hits", "invalid", "count")
    _list_states = ("_samples",)

    def __init__(self, task: str, num_classes: Optional[int] = None, threshold: float = 0.5,
                 top_k: int = 1, average: Optional[str] = "micro", ignore_index: Optional[int] = None,
                 zero_division: float = 0.0, beta: float = 1.0, num_labels: Optional[int] = None,
                 multidim_average: str = "global") -> None:
        super().__init__()
        # samplewise: a list of per-sample counts (outside the state_dict; it grows with the data,
        # as torchmetrics' does)
        self.multidim_average = multidim_average
        self._samplewise = _check_multidim(multidim_average, top_k)
        self._samples: list = []
        if task not in ("binary", "multiclass", "multilabel"):
            raise ValueError(f"fusedloss.metrics: task must be 'binary', 'multiclass' or 'multilabel', got {task!r}")
        if task == "multilabel" and num_labels is None:
            raise ValueError("fusedloss.metrics: task='multilabel' needs num_labels")
        self.task, self.num_classes, self.num_labels = task, _num_classes(task, num_classes), num_labels
        self.threshold, self.top_k, self.ignore_index = threshold, top_k, ignore_index
        self.average = "none" if average is None else average
        self.zero_division, self.beta = zero_division, beta
        classes = self.num_classes
        shape = (num_labels, 2, 2) if task == "multilabel" else (classes, classes)  # multilabel: per label
        self.register_buffer("confusion", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("top_k_hits", torch.zeros(classes, dtype=torch.long))
        self.register_buffer("invalid", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # updates: compute() needs one

    def reset(self) -> None:
        self._samples = []
        for buffer in (self.confusion, self.top_k_hits, self.invalid, self.count):
            buffer.zero_()

    def _add(self, confusion: Tensor, hits: Tensor, invalid: Tensor) -> None:
        self.confusion += confusion.to(self.confusion.device)
        self.top_k_hits += hits.to(self.top_k_hits.device)
        self.invalid += invalid.to(self.invalid.device)

    def _state_key(self):
        return ("counts", self.task, self.num_classes, self.num_labels, self.threshold, self.top_k,
                self.ignore_index, self.multidim_average)

    def _batch_state(self, preds: Tensor, target: Tensor):
        if self._samplewise:
            return samplewise.counts(preds, target, self.task, self.num_classes, self.num_labels,
                                     self.threshold, self.ignore_index)
        if self.task == "multilabel":
            confusion, invalid = multilabel.counts(preds, target, self.num_labels, self.threshold,
                                                   self.ignore_index)
            return confusion, torch.zeros_like(self.top_k_hits, device=confusion.device), invalid
        return torch.ops.fusedloss._classification_counts(
            preds, target, self.task, self.num_classes, self.threshold, self.top_k, self.ignore_index)

    def _add_batch_state(self, state) -> None:
        if self._samplewise:
            self._samples.append(state[0])
            self.invalid += state[1].to(self.invalid.device)
            self.count += 1
            return
        self._add(*state)
        self.count += 1  # a Python number: no copy to the state's device

    def _batch_value(self, state) -> Tensor:
        if self._samplewise:
            return self._sample_values(None, state[0], state[1])
        return self._value(None, *state)

    def _sync_other(self, process_group) -> None:
        if self._samplewise:  # per-sample counts: every rank's, in rank order
            samples = [[t.cpu() for t in counts] for counts in self._samples]
            device = self.count.device
            self._samples = [tuple(t.to(device) for t in counts)
                             for rank in self._gather(samples, process_group) for counts in rank]

    def _sample_values(self, metric: Optional[str], counts, invalid: Tensor) -> Tensor:
        metric = metric or self.metric
        beta = 1.0 if metric == "f1" else self.beta
        return samplewise.reduce(counts, invalid, "fbeta" if metric == "f1" else metric, self.task, self.average, beta,
                                 self.zero_division)

    def merge(self, other: "ClassificationCounts") -> "ClassificationCounts":
        if (other.task, other.num_classes, other.top_k) != (self.task, self.num_classes, self.top_k):
            raise ValueError("fusedloss.metrics: cannot merge states of different task, num_classes or top_k")
        self._add(other.confusion, other.top_k_hits, other.invalid)
        self.count += other.count.to(self.count.device)
        self._samples.extend(other._samples)
        return self

    def _value(self, metric: Optional[str], confusion: Tensor, hits: Tensor, invalid: Tensor) -> Tensor:
        metric = metric or self.metric
        beta = 1.0 if metric == "f1" else self.beta
        if self.task == "multilabel":
            return multilabel.reduce(confusion, invalid, "fbeta" if metric == "f1" else metric, self.average,
                                     beta, self.zero_division)
        return torch.ops.fusedloss._classification_metric(
            confusion, hits, invalid, "fbeta" if metric == "f1" else metric,
            self.task, self.average, beta, self.zero_division, self.top_k if metric == "accuracy" else 1)

    def compute(self, metric: Optional[str] = None) -> Tensor:
        """This instance's metric, or another one of the same counts ('accuracy', 'precision',
        'recall', 'fbeta', 'f1', 'confusion_matrix', 'stat_scores')."""
        if not self.count.item():
            raise RuntimeError("fusedloss.metrics: compute() before any update()")
        if self._samplewise:
            if not self._samples:
                raise RuntimeError("fusedloss.metrics: no per-sample counts: they are kept outside the state_dict "
                                   "(they grow with the data), so a loaded samplewise state has none")
            counts = tuple(torch.cat(parts) for parts in zip(*self._samples))
            return self._sample_values(metric, counts, self.invalid)
        return self._value(metric, self.confusion, self.top_k_hits, self.invalid)

    def compute_all(self) -> Dict[str, Tensor]:
        """Accuracy, precision, recall and F1 from the one state."""
        return {m: self.compute(m) for m in ("accuracy", "precision", "recall", "f1")}


class Accuracy(ClassificationCounts):
    metric = "accuracy"


class Precision(ClassificationCounts):
    metric = "precision"


class Recall(ClassificationCounts):
    metric = "recall"


class F1Score(ClassificationCounts):
    metric = "f1"


class FBetaScore(ClassificationCounts):
    metric = "fbeta"


class ConfusionMatrix(ClassificationCounts):
    metric = "confusion_matrix"


class StatScores(ClassificationCounts):
    metric = "stat_scores"


class RegressionMoments(StreamingState):
    """The shared state of the regression metrics: per-output float64 moments (a buffer). A
    torch.nn.Module: update, compute, reset, merge, and forward adds a batch and returns that
    batch's value."""

    metric = "mean_squared_error"

    def __init__(self, num_outputs: int = 1, squared: bool = True, adjusted: int = 0,
                 multioutput: str = "uniform_average") -> None:
        super().__init__()
        self.num_outputs, self.squared = num_outputs, squared
        self.adjusted, self.multioutput = adjusted, multioutput
        # (outputs, moments); R² takes its outputs from the data's columns on the first update.
        self.register_buffer("moments", torch.zeros(num_outputs, 5, dtype=torch.float64))

    def reset(self) -> None:
        self.moments.zero_()

    def _sync_other(self, process_group) -> None:
        # Moments merge by a stable formula, not by addition: every rank's, merged in rank order.
        device = self.moments.device
        merged = None
        for moments in self._gather(self.moments.cpu(), process_group):
            if not moments[:, 0].any():
                continue  # a rank without samples
            merged = moments if merged is None else torch.ops.fusedloss._merge_regression_moments(merged, moments)
        if merged is not None:
            self.moments = merged.to(device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        saved = state_dict.get(prefix + "moments")
        if saved is not None and saved.shape != self.moments.shape:  # R²: the outputs of its data
            self.moments = torch.zeros(saved.shape, dtype=self.moments.dtype, device=self.moments.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _batch_moments(self, preds: Tensor, target: Tensor) -> Tensor:
        if self.metric == "r2_score":
            return torch.ops.fusedloss._regression_moments(preds, target)
        return _moments(preds, target, self.num_outputs)

    def _add(self, batch: Tensor) -> None:
        if batch.shape != self.moments.shape and not self.moments[:, 0].any():
            self.moments = torch.zeros_like(batch)  # no samples yet: take the data's outputs
        self.moments = torch.ops.fusedloss._merge_regression_moments(self.moments, batch.to(self.moments.device))

    def _state_key(self):
        return ("moments", self.metric == "r2_score", self.num_outputs)

    def _batch_state(self, preds: Tensor, target: Tensor) -> Tensor:
        return self._batch_moments(preds, target)

    def _add_batch_state(self, state: Tensor) -> None:
        self._add(state)

    def _batch_value(self, state: Tensor) -> Tensor:
        return self._value(state)

    def merge(self, other: "RegressionMoments") -> "RegressionMoments":
        self._add(other.moments)
        return self

    def _value(self, moments: Tensor) -> Tensor:
        metric = self.metric
        if metric == "mean_squared_error" and not self.squared:
            metric = "root_mean_squared_error"
        multioutput = self.multioutput if metric == "r2_score" else _per_output(self.num_outputs)
        return torch.ops.fusedloss._regression_metric(moments, metric, self.adjusted, multioutput)

    def compute(self) -> Tensor:
        if not self.moments[:, 0].any():
            raise RuntimeError("fusedloss.metrics: compute() before any update()")
        return self._value(self.moments)


class MeanSquaredError(RegressionMoments):
    metric = "mean_squared_error"


class MeanAbsoluteError(RegressionMoments):
    metric = "mean_absolute_error"


class R2Score(RegressionMoments):
    metric = "r2_score"

"""Threshold-free classification metrics: precision-recall curve, ROC, AUROC and average
precision, for binary, multiclass (one-vs-rest) and multilabel tasks, with torchmetrics' arguments
and results.

Binned (``thresholds`` an int, a list or a tensor): one counting pass per update
(``torch.ops.fusedloss._threshold_histogram``) into a (C, 2, T + 1) histogram of the scores of
each class's positives and negatives over the bins the thresholds cut. Its size does not depend
on the number of samples, it merges by addition, and an update never reads anything back from a
GPU. The confusion counts of every threshold are suffix sums of the histogram.

Exact (``thresholds=None``): every score is kept and sorted at compute time, ties grouped as
sklearn.metrics does (precision_recall_curve, roc_curve, roc_auc_score, average_precision_score).

As torchmetrics: a batch with any score outside [0, 1] is logits (a sigmoid, or for multiclass a
softmax, is applied first); ``ignore_index`` drops those targets; 0/0 in a precision is NaN and
in a rate 0; averages ('macro', 'weighted', 'micro' for multilabel, 'none') skip NaN classes.
"""

from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

from ._state import StreamingState

Thresholds = Optional[Union[int, List[float], Tensor]]
Curve = Tuple[Tensor, Tensor, Tensor]

__all__ = [
    "precision_recall_curve", "roc", "auroc", "average_precision",
    "PrecisionRecallCurve", "ROC", "AUROC", "AveragePrecision",
]


def _thresholds(thresholds: Thresholds) -> Optional[Tensor]:
    """torchmetrics' thresholds argument as an ascending tensor of its dtype (an int or a list:
    the default float dtype, as torchmetrics; scores are compared with them in that precision).
    None: exact."""
    if thresholds is None:
        return None
    if isinstance(thresholds, int):
        if thresholds < 2:
            raise ValueError(f"thresholds as an int must be >= 2 (the number of bins), got {thresholds}")
        return torch.linspace(0, 1, thresholds)
    values = torch.as_tensor(thresholds).detach().cpu()
    if not values.is_floating_point():
        values = values.to(torch.get_default_dtype())
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D list or tensor, got shape {tuple(values.shape)}")
    if not torch.isfinite(values).all():
        raise ValueError("thresholds must be finite")
    unsorted = (values[1:] < values[:-1]).nonzero()
    if unsorted.numel():
        i = int(unsorted[0])
        raise ValueError(f"thresholds must be in ascending order: {values[i].item()} at position {i} is "
                         f"followed by {values[i + 1].item()}")
    return values


def _classes(task: str, num_classes: Optional[int], num_labels: Optional[int]) -> int:
    if task == "binary":
        return 1
    if task == "multiclass":
        if num_classes is None:
            raise ValueError("task='multiclass' needs num_classes")
        return num_classes
    if task == "multilabel":
        if num_labels is None:
            raise ValueError("task='multilabel' needs num_labels")
        return num_labels
    raise ValueError(f"task must be 'binary', 'multiclass' or 'multilabel', got '{task}'")


def _histogram(preds: Tensor, target: Tensor, task: str, thresholds: Tensor, classes: int,
               ignore_index: Optional[int]) -> Tuple[Tensor, Tensor]:
    if task == "binary":
        preds, target = preds.reshape(-1), target.reshape(-1)
    # float64 holds every threshold exactly: the kernel's comparison is the thresholds' own.
    return torch.ops.fusedloss._threshold_histogram(preds, target, thresholds.to(preds.device, torch.float64),
                                                    task, classes, ignore_index)


def _raise_if_invalid(invalid: Tensor) -> None:
    count = int(invalid)
    if count:
        raise ValueError(f"fusedloss.metrics: {count} targets were not labels (0/1, or a class in "
                         "[0, num_classes), or ignore_index); found on the device, reported at compute")


# ---- binned: from the histogram ----

def _confusion(histogram: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(tp, fp, fn, tn), each (C, T): a score >= threshold i lies in a bin > i."""
    at_least = histogram.flip(-1).cumsum(-1).flip(-1)  # [c, label, b]: scores in bins >= b
    tp, fp = at_least[:, 1, 1:], at_least[:, 0, 1:]
    positives, negatives = at_least[:, 1, :1], at_least[:, 0, :1]
    return tp, fp, positives - tp, negatives - fp


def _divide(num: Tensor, den: Tensor, zero_division: float) -> Tensor:
    num, den = num.double(), den.double()
    return torch.where(den != 0, num / den.clamp_min(1), torch.full_like(num, zero_division))


def _binned_pr(histogram: Tensor, thresholds: Tensor) -> Curve:
    tp, fp, fn, _ = _confusion(histogram)
    precision = _divide(tp, tp + fp, float("nan"))
    recall = _divide(tp, tp + fn, float("nan"))
    ones, zeros = precision.new_ones(precision.shape[0], 1), precision.new_zeros(precision.shape[0], 1)
    return torch.cat([precision, ones], 1), torch.cat([recall, zeros], 1), thresholds


def _binned_roc(histogram: Tensor, thresholds: Tensor) -> Curve:
    tp, fp, fn, tn = _confusion(histogram)
    return _divide(fp, fp + tn, 0.0).flip(-1), _divide(tp, tp + fn, 0.0).flip(-1), thresholds.flip(0)


# ---- exact: from every score ----

def _exact_batch(preds: Tensor, target: Tensor, task: str, classes: int,
                 ignore_index: Optional[int]) -> Tuple[Tensor, Tensor]:
    """One batch as probabilities, as torchmetrics formats it: binary and multiclass drop the
    ignored samples first; a batch with any score outside [0, 1] is logits (sigmoid, or softmax
    for multiclass). Multilabel keeps its ignored entries (dropped per label later). The shapes
    are checked here; the labels when the curves are computed (reading them is a wait on CUDA)."""
    if not preds.is_floating_point() or target.is_floating_point():
        raise ValueError(f"fusedloss.metrics: preds must hold float scores and target integer labels, "
                         f"got {preds.dtype} and {target.dtype}")
    expected = {"binary": tuple(preds.shape), "multilabel": (preds.shape[0], classes) if preds.dim() else ()}
    if task == "multiclass":
        if preds.dim() != 2 or preds.shape[1] != classes or target.shape != preds.shape[:1]:
            raise ValueError(f"fusedloss.metrics: multiclass expects preds (N, {classes}) and target (N), "
                             f"got {tuple(preds.shape)} and {tuple(target.shape)}")
    elif tuple(target.shape) != tuple(preds.shape) or tuple(preds.shape) != expected[task]:
        raise ValueError(f"fusedloss.metrics: {task} expects preds and target of one shape"
                         + (f" (N, {classes})" if task == "multilabel" else "")
                         + f", got {tuple(preds.shape)} and {tuple(target.shape)}")
    preds = preds.double() if preds.dtype == torch.float64 else preds.float()
    if task == "binary":
        preds, target = preds.reshape(-1), target.reshape(-1)
    if task != "multilabel" and ignore_index is not None:
        keep = target != ignore_index
        preds, target = preds[keep], target[keep]
    if ((preds < 0) | (preds > 1)).any():
        preds = preds.softmax(1) if task == "multiclass" else preds.sigmoid()
    return preds, target


def _one_vs_rest(preds: Tensor, target: Tensor, task: str, classes: int,
                 ignore_index: Optional[int]) -> List[Tuple[Tensor, Tensor]]:
    """Per class, the (scores, 0/1 labels) of its samples, from what _exact_batch kept (binary
    and multiclass without their ignored samples; multilabel's are dropped here, per label).
    A label that is neither 0/1 (a class in [0, classes) for multiclass) nor ignore_index raises."""
    counted = target if task != "multilabel" or ignore_index is None else target[target != ignore_index]
    bad = (counted < 0) | (counted >= (classes if task == "multiclass" else 2))
    if bool(bad.any()):
        raise ValueError(f"fusedloss.metrics: target {int(counted[bad][0])} is not a label of a {task} "
                         f"task (expected {'a class in [0, ' + str(classes) + ')' if task == 'multiclass' else '0 or 1'}"
                         f"{'' if ignore_index is None else ' or ignore_index ' + str(ignore_index)})")
    if task == "binary":
        return [(preds, target)]
    if task == "multiclass":
        return [(preds[:, c], (target == c).long()) for c in range(classes)]
    out = []
    for c in range(classes):
        if ignore_index is None:
            out.append((preds[:, c], target[:, c]))
        else:
            keep = target[:, c] != ignore_index
            out.append((preds[keep, c], target[keep, c]))
    return out


def _counts_at_distinct_scores(scores: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(fps, tps, thresholds) at each distinct score, descending (sklearn's _binary_clf_curve)."""
    # The order within a run of equal scores does not matter: only each run's end is read.
    scores, order = torch.sort(scores, descending=True)
    labels = labels[order]
    last_of_each = torch.nonzero(scores[1:] != scores[:-1]).reshape(-1)
    ends = torch.cat([last_of_each, last_of_each.new_tensor([scores.numel() - 1])])
    tps = labels.cumsum(0)[ends]
    fps = ends + 1 - tps
    return fps.double(), tps.double(), scores[ends]


def _exact_pr(scores: Tensor, labels: Tensor) -> Curve:
    fps, tps, thresholds = _counts_at_distinct_scores(scores, labels)
    precision = tps / (tps + fps)
    recall = tps / tps[-1] if tps[-1] > 0 else torch.ones_like(tps)
    one, zero = precision.new_ones(1), precision.new_zeros(1)
    return torch.cat([precision.flip(0), one]), torch.cat([recall.flip(0), zero]), thresholds.flip(0)


def _exact_roc(scores: Tensor, labels: Tensor) -> Curve:
    fps, tps, thresholds = _counts_at_distinct_scores(scores, labels)
    zero = fps.new_zeros(1)
    fps, tps = torch.cat([zero, fps]), torch.cat([zero, tps])
    thresholds = torch.cat([thresholds.new_ones(1), thresholds])
    fpr = fps / fps[-1] if fps[-1] > 0 else torch.zeros_like(fps)
    tpr = tps / tps[-1] if tps[-1] > 0 else torch.zeros_like(tps)
    return fpr, tpr, thresholds


# ---- areas and averages ----

def _area(fpr: Tensor, tpr: Tensor, max_fpr: Optional[float]) -> Tensor:
    if max_fpr is None or max_fpr == 1 or fpr.sum() == 0 or tpr.sum() == 0:
        return torch.trapz(tpr, fpr)
    max_area = torch.tensor(max_fpr, dtype=fpr.dtype, device=fpr.device)
    stop = torch.bucketize(max_area, fpr, out_int32=True, right=True)
    weight = (max_area - fpr[stop - 1]) / (fpr[stop] - fpr[stop - 1])
    tpr = torch.cat([tpr[:stop], torch.lerp(tpr[stop - 1], tpr[stop], weight).view(1)])
    fpr = torch.cat([fpr[:stop], max_area.view(1)])
    partial = torch.trapz(tpr, fpr)
    min_area = 0.5 * max_area ** 2  # McClish correction: 0.5 when non-discriminant, 1 at best
    return 0.5 * (1 + (partial - min_area) / (max_area - min_area))


def _step_area(precision: Tensor, recall: Tensor) -> Tensor:
    precision, recall = precision.nan_to_num(0.0), recall.nan_to_num(0.0)
    return -torch.sum((recall[1:] - recall[:-1]) * precision[:-1])


def _average(scores: Tensor, average: Optional[str], weights: Tensor) -> Tensor:
    if average is None or average == "none":
        return scores
    keep = ~torch.isnan(scores)
    if average == "macro":
        return scores[keep].mean()
    if average == "weighted":
        w = weights[keep].double()
        return (scores[keep] * w / w.sum()).sum() if w.sum() > 0 else (scores[keep] * 0).sum()
    raise ValueError(f"average must be 'macro', 'weighted', 'none' or None (or 'micro' for multilabel), "
                     f"got '{average}'")


class _Counts:
    """One metric's state: the histogram (binned) or every score (exact), and how to read it."""

    def __init__(self, task: str, thresholds: Optional[Tensor], classes: int, ignore_index: Optional[int]):
        self.task, self.thresholds, self.classes, self.ignore_index = task, thresholds, classes, ignore_index

    def curves(self, histogram: Optional[Tensor], kept: List[Tuple[Tensor, Tensor]], kind: str) -> List[Curve]:
        if self.thresholds is not None:
            assert histogram is not None
            p, r, t = (_binned_pr if kind == "pr" else _binned_roc)(histogram, self.thresholds.to(histogram.device))
            return [(p[c], r[c], t) for c in range(self.classes)]
        pairs = _one_vs_rest(*kept[0], self.task, self.classes, self.ignore_index) if kept else []
        return [(_exact_pr if kind == "pr" else _exact_roc)(s, y) for s, y in pairs]

    def supports(self, histogram: Optional[Tensor], kept: List[Tuple[Tensor, Tensor]]) -> Tensor:
        """The positives of each class (the weights of 'weighted')."""
        if self.thresholds is not None:
            assert histogram is not None
            return histogram[:, 1].sum(-1)
        return torch.stack([y.sum() for _, y in _one_vs_rest(*kept[0], self.task, self.classes, self.ignore_index)])


def _micro(task: str, average: Optional[str]) -> bool:
    if average == "micro" and task != "multilabel":
        raise ValueError("average='micro' applies to task='multilabel' only (as torchmetrics)")
    return average == "micro"


def _state(preds: Tensor, target: Tensor, task: str, thresholds: Thresholds, num_classes: Optional[int],
           num_labels: Optional[int], ignore_index: Optional[int], micro: bool = False):
    classes = _classes(task, num_classes, num_labels)
    bins = _thresholds(thresholds)
    if micro:  # multilabel micro: every (sample, label) one binary sample
        preds, target, task, classes = preds.reshape(-1), target.reshape(-1), "binary", 1
    counts = _Counts(task, bins, classes, ignore_index)
    if bins is None:
        return counts, None, [_exact_batch(preds, target, task, classes, ignore_index)]
    histogram, invalid = _histogram(preds, target, task, bins, classes, ignore_index)
    _raise_if_invalid(invalid)
    return counts, histogram, []


def _per_class(curves: List[Curve], counts: _Counts):
    """torchmetrics' shapes: one curve for binary; per class, stacked tensors when binned (every
    curve has the thresholds' length) and lists when exact."""
    if counts.task == "binary":
        return curves[0]
    a, b, c = (list(x) for x in zip(*curves))
    if counts.thresholds is not None:
        return torch.stack(a), torch.stack(b), c[0]
    return a, b, c


def precision_recall_curve(preds: Tensor, target: Tensor, task: str, thresholds: Thresholds = None,
                           num_classes: Optional[int] = None, num_labels: Optional[int] = None,
                           ignore_index: Optional[int] = None):
    """(precision, recall, thresholds) as torchmetrics' precision_recall_curve: per class for
    multiclass/multilabel (tensors when binned, lists when exact)."""
    counts, histogram, kept = _state(preds, target, task, thresholds, num_classes, num_labels, ignore_index)
    return _per_class(counts.curves(histogram, kept, "pr"), counts)


def roc(preds: Tensor, target: Tensor, task: str, thresholds: Thresholds = None,
        num_classes: Optional[int] = None, num_labels: Optional[int] = None, ignore_index: Optional[int] = None):
    """(fpr, tpr, thresholds) as torchmetrics' roc."""
    counts, histogram, kept = _state(preds, target, task, thresholds, num_classes, num_labels, ignore_index)
    return _per_class(counts.curves(histogram, kept, "roc"), counts)


def _auroc_of(counts: _Counts, histogram, kept, average: Optional[str], max_fpr: Optional[float]) -> Tensor:
    scores = torch.stack([_area(f, t, max_fpr) for f, t, _ in counts.curves(histogram, kept, "roc")])
    if counts.task == "binary":
        return scores[0]
    return _average(scores, average, counts.supports(histogram, kept))


def _ap_of(counts: _Counts, histogram, kept, average: Optional[str]) -> Tensor:
    scores = torch.stack([_step_area(p, r) for p, r, _ in counts.curves(histogram, kept, "pr")])
    if counts.task == "binary":
        return scores[0]
    return _average(scores, average, counts.supports(histogram, kept))


def auroc(preds: Tensor, target: Tensor, task: str, thresholds: Thresholds = None,
          num_classes: Optional[int] = None, num_labels: Optional[int] = None, average: Optional[str] = "macro",
          max_fpr: Optional[float] = None, ignore_index: Optional[int] = None) -> Tensor:
    """Area under the ROC curve as torchmetrics' auroc; max_fpr (binary): partial AUROC with the
    McClish correction."""
    if max_fpr is not None and (task != "binary" or not 0 < max_fpr <= 1):
        raise ValueError(f"max_fpr must be in (0, 1] and applies to task='binary' only, got {max_fpr}")
    micro = _micro(task, average)
    counts, histogram, kept = _state(preds, target, task, thresholds, num_classes, num_labels, ignore_index, micro)
    return _auroc_of(counts, histogram, kept, average, max_fpr)


def average_precision(preds: Tensor, target: Tensor, task: str, thresholds: Thresholds = None,
                      num_classes: Optional[int] = None, num_labels: Optional[int] = None,
                      average: Optional[str] = "macro", ignore_index: Optional[int] = None) -> Tensor:
    """Average precision (area under the step PR curve) as torchmetrics' average_precision."""
    micro = _micro(task, average)
    counts, histogram, kept = _state(preds, target, task, thresholds, num_classes, num_labels, ignore_index, micro)
    return _ap_of(counts, histogram, kept, average)


class _ThresholdMetric(StreamingState):
    """A streaming threshold metric as a module: update / compute / reset / merge / forward, with
    torchmetrics' arguments. Binned: the histogram (and the thresholds) are buffers, so .to(),
    state_dict and load_state_dict carry them. Exact: the scores are kept in a list (not in the
    state_dict; memory grows with the data, as torchmetrics')."""

    _area: Optional[str] = None  # None: a curve; 'roc' or 'pr': its area
    _additive_buffers = ("histogram", "invalid")
    _list_states = ("_kept",)

    def __init__(self, task: str, thresholds: Thresholds = None, num_classes: Optional[int] = None,
                 num_labels: Optional[int] = None, average: Optional[str] = "macro",
                 max_fpr: Optional[float] = None, ignore_index: Optional[int] = None) -> None:
        super().__init__()
        self.task, self.average, self.max_fpr = task, average, max_fpr
        classes = _classes(task, num_classes, num_labels)
        self._flatten = self._area is not None and _micro(task, average)
        state_task, state_classes = ("binary", 1) if self._flatten else (task, classes)
        bins = _thresholds(thresholds)
        self._counts = _Counts(state_task, bins, state_classes, ignore_index)
        self._key = ("threshold histogram", self._flatten, state_task, state_classes, ignore_index,
                     None if bins is None else (bins.dtype, tuple(bins.tolist())))
        self._kept: List[Tuple[Tensor, Tensor]] = []
        if bins is not None:
            self.register_buffer("thresholds", bins)
            self.register_buffer("histogram", torch.zeros(state_classes, 2, bins.numel() + 1, dtype=torch.long))
            self.register_buffer("invalid", torch.zeros((), dtype=torch.long))

    def _state_key(self):
        return self._key

    def _batch_state(self, preds: Tensor, target: Tensor):
        """(histogram, invalid count) when binned, (scores, target) when exact."""
        if self._flatten:
            preds, target = preds.reshape(-1), target.reshape(-1)
        c = self._counts
        if c.thresholds is None:
            return _exact_batch(preds, target, c.task, c.classes, c.ignore_index)
        return _histogram(preds, target, c.task, self.thresholds, c.classes, c.ignore_index)

    def _add_batch_state(self, state) -> None:
        if self._counts.thresholds is None:
            self._kept.append(state)
        else:
            self.histogram += state[0].to(self.histogram.device)
            self.invalid += state[1].to(self.invalid.device)

    def _batch_value(self, state):
        if self._counts.thresholds is None:
            return self._value(None, [state])
        _raise_if_invalid(state[1])
        return self._value(state[0], [])

    def sync(self, process_group=None) -> "_ThresholdMetric":
        if self._counts.thresholds is None:  # exact: no histogram buffers to add up
            self._additive_buffers = ()
        return super().sync(process_group)

    def _sync_other(self, process_group) -> None:
        if self._counts.thresholds is None:  # exact: every rank's scores, in rank order
            kept = [(s.cpu(), t.cpu()) for s, t in self._kept]
            self._kept = [pair for rank in self._gather(kept, process_group) for pair in rank]

    def merge(self, other: "_ThresholdMetric") -> "_ThresholdMetric":
        """Adds another instance's state (e.g. another process's) to this one."""
        if self._counts.thresholds is None:
            self._kept.extend(other._kept)
        else:
            self.histogram += other.histogram.to(self.histogram.device)
            self.invalid += other.invalid.to(self.invalid.device)
        return self

    def reset(self) -> None:
        self._kept = []
        if self._counts.thresholds is not None:
            self.histogram.zero_()
            self.invalid.zero_()

    def _value(self, histogram: Optional[Tensor], kept: List[Tuple[Tensor, Tensor]]):
        c = self._counts
        if c.thresholds is not None:
            c.thresholds = self.thresholds
        if self._area == "roc":
            return _auroc_of(c, histogram, kept, self.average, self.max_fpr)
        if self._area == "pr":
            return _ap_of(c, histogram, kept, self.average)
        return _per_class(c.curves(histogram, kept, self._curve), c)

    def compute(self):
        if self._counts.thresholds is not None:
            _raise_if_invalid(self.invalid)
            return self._value(self.histogram, [])
        if not self._kept:
            raise RuntimeError(f"{type(self).__name__}.compute() before any update (exact mode keeps its "
                               "scores outside the state_dict: a loaded exact state has none)")
        scores, target = zip(*self._kept)
        return self._value(None, [(torch.cat(scores), torch.cat(target))])


class PrecisionRecallCurve(_ThresholdMetric):
    _curve = "pr"

    def __init__(self, task: str, thresholds: Thresholds = None, num_classes: Optional[int] = None,
                 num_labels: Optional[int] = None, ignore_index: Optional[int] = None) -> None:
        super().__init__(task, thresholds, num_classes, num_labels, None, None, ignore_index)


class ROC(_ThresholdMetric):
    _curve = "roc"

    def __init__(self, task: str, thresholds: Thresholds = None, num_classes: Optional[int] = None,
                 num_labels: Optional[int] = None, ignore_index: Optional[int] = None) -> None:
        super().__init__(task, thresholds, num_classes, num_labels, None, None, ignore_index)


class AUROC(_ThresholdMetric):
    _area = "roc"
    _curve = "roc"

    def __init__(self, task: str, thresholds: Thresholds = None, num_classes: Optional[int] = None,
                 num_labels: Optional[int] = None, average: Optional[str] = "macro",
                 max_fpr: Optional[float] = None, ignore_index: Optional[int] = None) -> None:
        if max_fpr is not None and (task != "binary" or not 0 < max_fpr <= 1):
            raise ValueError(f"max_fpr must be in (0, 1] and applies to task='binary' only, got {max_fpr}")
        super().__init__(task, thresholds, num_classes, num_labels, average, max_fpr, ignore_index)


class AveragePrecision(_ThresholdMetric):
    _area = "pr"
    _curve = "pr"

    def __init__(self, task: str, thresholds: Thresholds = None, num_classes: Optional[int] = None,
                 num_labels: Optional[int] = None, average: Optional[str] = "macro",
                 ignore_index: Optional[int] = None) -> None:
        super().__init__(task, thresholds, num_classes, num_labels, average, None, ignore_index)

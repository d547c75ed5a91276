"""The thresholded classification metrics for task='multilabel' (accuracy, precision, recall,
F-beta, confusion matrix, stat scores), with torchmetrics' rules: per label, a score (a sigmoid
first when the batch has any score outside [0, 1]) above `threshold` predicts the label.

The per-label counts come from the threshold-histogram kernel with one cut just above
`threshold` (the scores > threshold fall in its upper bin): one pass, int64 counts (L, 2, 2)
[label][target][predicted], no read-back from a GPU in an update.
"""

import math
from typing import Optional

import torch
from torch import Tensor


def counts(preds: Tensor, target: Tensor, num_labels: Optional[int], threshold: float,
           ignore_index: Optional[int]):
    """((L, 2, 2) int64 counts [label][target][predicted], invalid-target count) of one batch."""
    if num_labels is None:
        raise ValueError("fusedloss.metrics: task='multilabel' needs num_labels")
    if preds.dim() < 2 or preds.shape[1] != num_labels or preds.shape != target.shape:
        raise ValueError(f"fusedloss.metrics: multilabel expects preds and target of shape (N, {num_labels}, ...), "
                         f"got {tuple(preds.shape)} and {tuple(target.shape)}")
    if not preds.is_floating_point():
        preds = preds.float()  # 0/1 labels: in [0, 1], no sigmoid, thresholded as scores
    if preds.dim() > 2:  # (N, L, ...): every position is a sample of each label
        preds, target = preds.movedim(1, -1), target.movedim(1, -1)
    preds, target = preds.reshape(-1, num_labels), target.reshape(-1, num_labels)
    cut = torch.tensor([math.nextafter(threshold, math.inf)], dtype=torch.float64, device=preds.device)
    histogram, invalid = torch.ops.fusedloss._threshold_histogram(preds, target, cut, "multilabel", num_labels,
                                                                  ignore_index)
    return histogram, invalid


def _divide(num: Tensor, den: Tensor, zero_division: float) -> Tensor:
    num, den = num.double(), den.double()
    return torch.where(den != 0, num / torch.where(den != 0, den, 1), torch.full_like(num, zero_division))


def _weighted(score: Tensor, average: str, tp: Tensor, fn: Tensor) -> Tensor:
    """'macro': every label counts (multilabel, as torchmetrics); 'weighted': by support."""
    if average in ("none", None):
        return score
    weights = (tp + fn).double() if average == "weighted" else torch.ones_like(score)
    return _divide(weights * score, weights.sum(), 0.0).sum()


def reduce(confusion: Tensor, invalid: Tensor, metric: str, average: Optional[str], beta: float = 1.0,
           zero_division: float = 0.0) -> Tensor:
    """A metric from (L, 2, 2) counts, as torchmetrics' multilabel functions."""
    if int(invalid):
        raise ValueError(f"fusedloss.metrics: {int(invalid)} targets were not 0, 1 or ignore_index "
                         "(found on the device, reported at compute)")
    average = "none" if average is None else average
    if average not in ("micro", "macro", "weighted", "none"):
        raise ValueError(f"fusedloss.metrics: average must be 'micro', 'macro', 'weighted' or 'none', got '{average}'")
    tn, fp, fn, tp = confusion[:, 0, 0], confusion[:, 0, 1], confusion[:, 1, 0], confusion[:, 1, 1]
    if metric == "confusion_matrix":
        return confusion
    if metric == "stat_scores":
        scores = torch.stack([tp, fp, tn, fn, tp + fn], -1)
        if average == "micro":
            return scores.sum(0)
        if average == "none":
            return scores
        if average == "macro":
            return scores.double().mean(0)
        support = (tp + fn).double()
        return (scores.double() * (support / support.sum()).unsqueeze(-1)).sum(0)
    if average == "micro":
        tn, fp, fn, tp = tn.sum(), fp.sum(), fn.sum(), tp.sum()
    if metric == "accuracy":
        score = _divide(tp + tn, tp + tn + fp + fn, 0.0)
    elif metric == "precision":
        score = _divide(tp, tp + fp, zero_division)
    elif metric == "recall":
        score = _divide(tp, tp + fn, zero_division)
    elif metric == "fbeta":
        b2 = beta * beta
        score = _divide((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp, zero_division)
    else:
        raise ValueError(f"fusedloss.metrics: unknown metric '{metric}'")
    return score if average == "micro" else _weighted(score, average, tp, fn)

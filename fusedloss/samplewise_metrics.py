"""multidim_average='samplewise' for the thresholded classification metrics: one value per
sample, over the sample's extra dimensions (and, for multilabel, its labels), as torchmetrics'.

Per sample and class, tp / fp / tn / fn over the sample's positions, from ATen comparisons and
sums (no read-back from a GPU); ignored targets count nowhere. The reductions follow torchmetrics'
samplewise rules: 'micro' adds the classes first; 'macro' (multiclass: over the classes that occur
in the sample) and 'weighted' average each sample's per-class scores.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

Counts = Tuple[Tensor, Tensor, Tensor, Tensor]


def _probabilities(preds: Tensor, softmax_dim: Optional[int] = None) -> Tensor:
    preds = preds.double() if preds.dtype == torch.float64 else preds.float()
    logits = ((preds < 0) | (preds > 1)).any()  # a device tensor: no read-back
    squashed = preds.softmax(softmax_dim) if softmax_dim is not None else preds.sigmoid()
    return torch.where(logits, squashed, preds)


def counts(preds: Tensor, target: Tensor, task: str, num_classes: Optional[int], num_labels: Optional[int],
           threshold: float, ignore_index: Optional[int]) -> Tuple[Counts, Tensor]:
    """((tp, fp, tn, fn), each (N, C) int64: C = 1 (binary), num_classes or num_labels; and the
    count of targets that are not labels nor ignore_index, a device tensor)."""
    if preds.dim() < 1 or preds.shape[0] != target.shape[0]:
        raise ValueError(f"fusedloss.metrics: samplewise needs preds and target with one sample per row, got "
                         f"{tuple(preds.shape)} and {tuple(target.shape)}")
    if task == "binary":
        predicted = (_probabilities(preds) > threshold) if preds.is_floating_point() else preds.bool()
        predicted, target = predicted.reshape(len(target), -1, 1), target.reshape(len(target), -1, 1)
        positive = target == 1
        valid = (target == 0) | positive
    elif task == "multilabel":
        if num_labels is None or preds.dim() < 2 or preds.shape[1] != num_labels:
            raise ValueError(f"fusedloss.metrics: multilabel expects preds and target of shape (N, {num_labels}, ...), "
                             f"got {tuple(preds.shape)} and {tuple(target.shape)}")
        predicted = (_probabilities(preds) > threshold) if preds.is_floating_point() else preds.bool()
        predicted = predicted.reshape(len(target), num_labels, -1).transpose(1, 2)
        target = target.reshape(len(target), num_labels, -1).transpose(1, 2)
        positive = target == 1
        valid = (target == 0) | positive
    else:
        if num_classes is None:
            raise ValueError("fusedloss.metrics: task='multiclass' needs num_classes")
        labels = preds.argmax(1) if preds.is_floating_point() else preds
        labels, target = labels.reshape(len(target), -1), target.reshape(len(target), -1)
        classes = torch.arange(num_classes, device=target.device)
        predicted = labels.unsqueeze(-1) == classes
        positive = target.unsqueeze(-1) == classes
        valid = ((target >= 0) & (target < num_classes)).unsqueeze(-1).expand_as(positive)
    ignored = target == ignore_index if ignore_index is not None else torch.zeros_like(target, dtype=torch.bool)
    label = valid.any(-1) if task == "multiclass" else valid
    invalid = (~label & ~ignored).sum()
    valid = valid & ~(ignored.unsqueeze(-1) if task == "multiclass" else ignored)
    hit = predicted == positive
    tp = (hit & positive & valid).sum(1)
    tn = (hit & ~positive & valid).sum(1)
    fn = (~hit & positive & valid).sum(1)
    fp = (~hit & ~positive & valid).sum(1)
    return (tp, fp, tn, fn), invalid


def raise_if_invalid(invalid: Tensor) -> None:
    if int(invalid):
        raise ValueError(f"fusedloss.metrics: {int(invalid)} targets are not labels (0/1, or a class in "
                         "[0, num_classes)) nor ignore_index")


def _divide(num: Tensor, den: Tensor, zero_division: float) -> Tensor:
    num, den = num.double(), den.double()
    return torch.where(den != 0, num / torch.where(den != 0, den, 1), torch.full_like(num, zero_division))


def reduce(state: Counts, metric: str, task: str, average: Optional[str], beta: float = 1.0,
           zero_division: float = 0.0) -> Tensor:
    """Per sample: (N,) for a score ((N, C) for average='none'); stat scores add a last dim of 5."""
    tp, fp, tn, fn = state
    average = "none" if average is None else average
    if task == "binary":
        average = "micro"  # one class: 'binary'
    if metric == "stat_scores":
        scores = torch.stack([tp, fp, tn, fn, tp + fn], -1)
        if task == "binary" or average == "micro":
            return scores.sum(1)
        if average == "none":
            return scores
        if average == "macro":
            return scores.double().mean(1)
        support = (tp + fn).double()
        return (scores.double() * (support / support.sum(1, keepdim=True)).unsqueeze(-1)).sum(1)
    if average == "micro":
        tp, fp, tn, fn = tp.sum(1), fp.sum(1), tn.sum(1), fn.sum(1)
    if metric == "accuracy":
        score = _divide(tp + tn, tp + tn + fp + fn, 0.0) if task != "multiclass" else _divide(tp, tp + fn, 0.0)
    elif metric == "precision":
        score = _divide(tp, tp + fp, zero_division)
    elif metric == "recall":
        score = _divide(tp, tp + fn, zero_division)
    elif metric == "fbeta":
        b2 = beta * beta
        score = _divide((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp, zero_division)
    else:
        raise ValueError(f"fusedloss.metrics: '{metric}' has no samplewise form")
    if average in ("micro", "none"):
        return score
    if average == "weighted":
        weights = (tp + fn).double()
    else:
        weights = torch.ones_like(score)
        if task == "multiclass":
            weights = torch.where(tp + fp + fn == 0, 0.0, weights)
    return _divide(weights * score, weights.sum(-1, keepdim=True), 0.0).sum(-1)

"""multidim_average='samplewise' for the thresholded classification metrics: one value per
sample, over the sample's extra dimensions (and, for multilabel, its labels), as torchmetrics'.

Per sample and class, tp / fp / tn / fn over the sample's positions, from ATen comparisons and
sums (no read-back from a GPU); ignored targets count nowhere. The reductions (one op for every
counts-based score) follow torchmetrics' samplewise rules: 'micro' adds the classes first; 'macro' (multiclass: over the classes that occur
in the sample) and 'weighted' average each sample's per-class scores.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

Counts = Tuple[Tensor, Tensor, Tensor, Tensor]


def _probabilities(preds: Tensor) -> Tensor:
    """A sigmoid when the batch has any score outside [0, 1] (decided on the device)."""
    preds = preds.double() if preds.dtype == torch.float64 else preds.float()
    logits = ((preds < 0) | (preds > 1)).any()  # a device tensor: no read-back
    return torch.where(logits, preds.sigmoid(), preds)


def _check_shapes(preds: Tensor, target: Tensor, task: str, num_classes: Optional[int]) -> None:
    """Every position of preds pairs with one of target: the same shape, but for multiclass scores,
    whose dim 1 holds the classes. A check of dim 0 alone would let a reshape pair them wrongly."""
    class_scores = task == "multiclass" and preds.is_floating_point()
    expected = (preds.shape[:1] + preds.shape[2:]) if class_scores else preds.shape
    if preds.dim() < (2 if class_scores else 1) or target.shape != expected:
        wanted = "preds (N, C, ...) and target (N, ...)" if class_scores else "preds and target of the same shape (N, ...)"
        raise ValueError(f"fusedloss.metrics: samplewise needs {wanted}, got preds {tuple(preds.shape)} and "
                         f"target {tuple(target.shape)}")
    if class_scores and num_classes is not None and preds.shape[1] != num_classes:
        raise ValueError(f"fusedloss.metrics: multiclass preds need num_classes={num_classes} scores in dim 1, got "
                         f"preds {tuple(preds.shape)}")


def counts(preds: Tensor, target: Tensor, task: str, num_classes: Optional[int], num_labels: Optional[int],
           threshold: float, ignore_index: Optional[int]) -> Tuple[Counts, Tensor]:
    """((tp, fp, tn, fn), each (N, C) int64: C = 1 (binary), num_classes or num_labels; and the
    count of targets that are not labels nor ignore_index, a device tensor)."""
    _check_shapes(preds, target, task, num_classes)
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



def reduce(state: Counts, invalid: Tensor, metric: str, task: str, average: Optional[str], beta: float = 1.0,
           zero_division: float = 0.0) -> Tensor:
    """Per sample: (N,) for a score ((N, C) for average='none'); stat scores add a last dim of 5.
    The scores: torch.ops.fusedloss._counts_metric (shared with multilabel and the C++ API)."""
    average = "micro" if task == "binary" else ("none" if average is None else average)  # binary: one class
    return torch.ops.fusedloss._counts_metric(*state, invalid, metric, average, beta, zero_division,
                                              task == "multiclass")

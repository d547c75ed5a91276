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
    # Made on the device (a CPU tensor copied there would wait for the GPU).
    cut = torch.full((1,), math.nextafter(threshold, math.inf), dtype=torch.float64, device=preds.device)
    histogram, invalid = torch.ops.fusedloss._threshold_histogram(preds, target, cut, "multilabel", num_labels,
                                                                  ignore_index)
    return histogram, invalid


def reduce(confusion: Tensor, invalid: Tensor, metric: str, average: Optional[str], beta: float = 1.0,
           zero_division: float = 0.0) -> Tensor:
    """A metric from (L, 2, 2) counts, as torchmetrics' multilabel functions (the scores:
    torch.ops.fusedloss._counts_metric, shared with samplewise and the C++ API)."""
    if metric == "confusion_matrix":
        return confusion
    tn, fp, fn, tp = confusion[:, 0, 0], confusion[:, 0, 1], confusion[:, 1, 0], confusion[:, 1, 1]
    return torch.ops.fusedloss._counts_metric(tp, fp, tn, fn, invalid, metric,
                                              "none" if average is None else average, beta, zero_division)

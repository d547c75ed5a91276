"""Plots of the threshold-free metrics (matplotlib, imported only when a plot is drawn): the
precision-recall curve, the ROC curve and the reliability diagram of a CalibrationError."""

from typing import Any, Optional

from torch import Tensor

__all__ = ["plot_precision_recall", "plot_roc", "plot_reliability"]


def _axes(ax: Optional[Any]):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # noqa: PLC0415 (optional dependency)

    return plt.subplots(figsize=(4.5, 4))[1]


def plot_precision_recall(precision: Tensor, recall: Tensor, ax: Optional[Any] = None,
                          label: Optional[str] = None):
    """A binary precision-recall curve (precision_recall_curve's first two outputs) as a step
    plot, as sklearn draws it; thresholds where nothing is predicted positive (precision 0/0) are
    left out. Returns the axes."""
    ax = _axes(ax)
    precision, recall = precision.double().cpu(), recall.double().cpu()
    defined = ~precision.isnan()
    ax.plot(recall[defined].numpy(), precision[defined].numpy(), drawstyle="steps-post", label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    return ax


def plot_roc(fpr: Tensor, tpr: Tensor, ax: Optional[Any] = None, label: Optional[str] = None):
    """A binary ROC curve (roc's first two outputs), with the chance diagonal; returns the axes."""
    ax = _axes(ax)
    ax.plot(fpr.double().cpu().numpy(), tpr.double().cpu().numpy(), label=label)
    ax.plot([0, 1], [0, 1], color="0.7", linewidth=0.8, linestyle="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    return ax


def plot_reliability(metric: Any, ax: Optional[Any] = None, label: Optional[str] = None):
    """A CalibrationError's reliability diagram: per bin, the accuracy against the mean
    confidence (empty bins left out), with the diagonal of perfect calibration."""
    ax = _axes(ax)
    count, confidence, accuracy = metric.bin_sums.double().cpu()
    seen = count > 0
    ax.plot((confidence[seen] / count[seen]).numpy(), (accuracy[seen] / count[seen]).numpy(), marker="o",
            label=label)
    ax.plot([0, 1], [0, 1], color="0.7", linewidth=0.8, linestyle="--")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    return ax

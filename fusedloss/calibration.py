"""Calibration error (ECE 'l1', MCE 'max', RMS 'l2') with torchmetrics' arguments and results, in
a streaming state of n_bins + 1 float64 sums (count, confidence, accuracy per bin) instead of
every prediction: the state does not grow with the data, merges by addition, and an update reads
nothing back from a GPU (bucketize and scatter-add on the device, in the op
torch.ops.fusedloss._calibration_bins that the C++ API's CalibrationError runs too).

Confidence and accuracy as torchmetrics: binary, the probability and the 0/1 target; multiclass,
the largest probability and whether its class is the target. A batch with any score outside
[0, 1] is logits (sigmoid / softmax first). Bins: linspace(0, 1, n_bins + 1) with right-closed
bucketing, so a confidence of exactly 1 has a bin of its own, as torchmetrics'.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._state import StreamingState

__all__ = ["calibration_error", "CalibrationError"]


def _check(task: str, n_bins: int, norm: str, num_classes: Optional[int]) -> None:
    if task not in ("binary", "multiclass"):
        raise ValueError(f"task must be 'binary' or 'multiclass', got '{task}'")
    if task == "multiclass" and (num_classes is None or num_classes < 2):
        raise ValueError(f"task='multiclass' needs num_classes >= 2, got {num_classes}")
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins}")
    if norm not in ("l1", "l2", "max"):
        raise ValueError(f"norm must be 'l1', 'l2' or 'max', got '{norm}'")


def _bin_sums(preds: Tensor, target: Tensor, task: str, n_bins: int, num_classes: Optional[int],
              ignore_index: Optional[int]) -> Tuple[Tensor, Tensor]:
    """(3, n_bins + 1) float64: per bin, the count, the summed confidence, the summed accuracy; and
    the count of targets that are not labels (0/1; a class in [0, num_classes)) nor ignore_index,
    a device tensor (raised where the value is computed). The op is the C++ API's too."""
    return torch.ops.fusedloss._calibration_bins(preds, target, task, n_bins, num_classes, ignore_index)


def _error(sums: Tensor, invalid: Tensor, norm: str) -> Tensor:
    """The error of per-bin sums; a ValueError when targets that are not labels were counted."""
    return torch.ops.fusedloss._calibration_error(sums, invalid, norm)


def calibration_error(preds: Tensor, target: Tensor, task: str, n_bins: int = 15, norm: str = "l1",
                      num_classes: Optional[int] = None, ignore_index: Optional[int] = None) -> Tensor:
    """Expected ('l1'), maximum ('max') or root-mean-square ('l2') calibration error, as
    torchmetrics' calibration_error (float64)."""
    _check(task, n_bins, norm, num_classes)
    return _error(*_bin_sums(preds, target, task, n_bins, num_classes, ignore_index), norm)


class CalibrationError(StreamingState):
    """Streaming calibration error: the per-bin sums are a buffer (.to(), state_dict);
    update / compute / reset / merge / sync / forward (the batch's value, also accumulated)."""

    _additive_buffers = ("bin_sums", "invalid")

    def __init__(self, task: str, n_bins: int = 15, norm: str = "l1", num_classes: Optional[int] = None,
                 ignore_index: Optional[int] = None) -> None:
        super().__init__()
        _check(task, n_bins, norm, num_classes)
        self.task, self.n_bins, self.norm = task, n_bins, norm
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.register_buffer("bin_sums", torch.zeros(3, n_bins + 1, dtype=torch.float64))
        self.register_buffer("invalid", torch.zeros((), dtype=torch.long))

    def _state_key(self):
        return ("calibration", self.task, self.n_bins, self.num_classes, self.ignore_index)

    def _batch_state(self, preds: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
        return _bin_sums(preds, target, self.task, self.n_bins, self.num_classes, self.ignore_index)

    def _add_batch_state(self, state: Tuple[Tensor, Tensor]) -> None:
        self.bin_sums += state[0].to(self.bin_sums.device)
        self.invalid += state[1].to(self.invalid.device)

    def _batch_value(self, state: Tuple[Tensor, Tensor]) -> Tensor:
        return _error(*state, self.norm)

    def merge(self, other: "CalibrationError") -> "CalibrationError":
        self.bin_sums += other.bin_sums.to(self.bin_sums.device)
        self.invalid += other.invalid.to(self.invalid.device)
        return self

    def reset(self) -> None:
        self.bin_sums.zero_()
        self.invalid.zero_()

    def compute(self) -> Tensor:
        return _error(self.bin_sums, self.invalid, self.norm)

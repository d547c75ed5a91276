"""The base of the metric modules: a state in buffers that follows the data to its device and
keeps its dtype, and the one protocol (a batch's state, added to the state; its value) through
which update(), forward() and MetricCollection share a counting pass."""

from typing import Any, Hashable

import torch
from torch import Tensor


class StreamingState(torch.nn.Module):
    """A metric state in buffers, so .to(device), state_dict and load_state_dict carry it.

    Until the first update the buffers follow the data: they move to its device then (an update
    never copies a GPU result to the CPU, which would wait for the GPU). Casts leave the state's
    dtypes alone (int64 counts, float64 sums): .to(), .half() or .double() move it only."""

    def __init__(self) -> None:
        super().__init__()
        self._updated = False

    def _follow(self, data: Tensor) -> None:
        if not self._updated:
            for name, buffer in self._buffers.items():
                if buffer is not None and buffer.device != data.device:
                    self._buffers[name] = buffer.to(data.device)
            self._updated = True

    def _apply(self, fn, recurse=True):
        for name, buffer in self._buffers.items():
            if buffer is not None:
                self._buffers[name] = buffer.to(fn(buffer).device)
        return self

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._updated = True  # a loaded state stays where it was put

    # ---- the protocol each metric implements ----
    def _state_key(self) -> Hashable:
        """Metrics with equal keys have equal batch states (MetricCollection computes it once)."""
        return id(self)

    def _batch_state(self, preds: Tensor, target: Tensor) -> Any:
        raise NotImplementedError

    def _add_batch_state(self, state: Any) -> None:
        raise NotImplementedError

    def _batch_value(self, state: Any) -> Any:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Adds a batch (on a GPU without waiting for it)."""
        self._follow(target)
        self._add_batch_state(self._batch_state(preds, target))

    def forward(self, preds: Tensor, target: Tensor) -> Any:
        """Adds a batch and returns the metric of that batch alone (as a torchmetrics forward)."""
        self._follow(target)
        state = self._batch_state(preds, target)
        self._add_batch_state(state)
        return self._batch_value(state)

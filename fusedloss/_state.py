"""The base of the metric modules: a state in buffers that follows the data to its device and
keeps its dtype, and the one protocol (a batch's state, added to the state; its value) through
which update(), forward() and MetricCollection share a counting pass."""

from typing import Any, Dict, Hashable, List

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

    # Attributes holding lists of tensor tuples (scores kept by exact modes, per-sample counts):
    # they grow with the data, so they stay outside the state_dict, but move with the buffers.
    _list_states: tuple = ()

    def _apply(self, fn, recurse=True):
        device = None
        for name, buffer in self._buffers.items():
            if buffer is not None:
                device = fn(buffer).device
                self._buffers[name] = buffer.to(device)
        for name in self._list_states:
            kept = getattr(self, name)
            if kept:
                device = device or fn(kept[0][0]).device
                setattr(self, name, [tuple(t.to(device) for t in item) for item in kept])
        return self

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

    # ---- across processes ----
    # Buffers that add up across ranks (counts, histograms, sums); the rest (thresholds, moments)
    # are either equal on every rank or merged by _sync_other.
    _additive_buffers: tuple = ()

    def sync(self, process_group=None) -> "StreamingState":
        """Replaces this rank's state by the state of all ranks together (in place, on every rank):
        one all-reduce per dtype of the additive buffers (never the predictions), and a gather of
        the small states that do not add up. A no-op outside torch.distributed. Call it once
        before compute(): a second call would count the other ranks again."""
        import torch.distributed as dist  # noqa: PLC0415

        if not (dist.is_available() and dist.is_initialized()):
            return self
        by_dtype: Dict[torch.dtype, List[str]] = {}
        for name in self._additive_buffers:
            by_dtype.setdefault(self._buffers[name].dtype, []).append(name)
        # NCCL reduces GPU tensors only: a rank that never updated may still hold CPU buffers.
        nccl = dist.get_backend(process_group) == "nccl"
        for names in by_dtype.values():
            flat = torch.cat([self._buffers[n].reshape(-1) for n in names])
            if nccl and not flat.is_cuda:
                flat = flat.cuda()
            dist.all_reduce(flat, group=process_group)
            offset = 0
            for n in names:
                buffer = self._buffers[n]
                buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
                offset += buffer.numel()
        self._sync_other(process_group)
        return self

    def _sync_other(self, process_group) -> None:
        """Combines what is not an additive buffer (lists of kept scores, moments)."""

    @staticmethod
    def _gather(value: Any, process_group) -> List[Any]:
        import torch.distributed as dist  # noqa: PLC0415

        gathered: List[Any] = [None] * dist.get_world_size(process_group)
        dist.all_gather_object(gathered, value, group=process_group)
        return gathered

    def forward(self, preds: Tensor, target: Tensor) -> Any:
        """Adds a batch and returns the metric of that batch alone (as a torchmetrics forward)."""
        self._follow(target)
        state = self._batch_state(preds, target)
        self._add_batch_state(state)
        return self._batch_value(state)

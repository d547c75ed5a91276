"""The base of the metric modules: a state in buffers that follows the data to its device and
keeps its dtype."""

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

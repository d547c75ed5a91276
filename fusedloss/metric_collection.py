"""MetricCollection: several fusedloss metrics updated together, torchmetrics' style, where the
metrics that keep the same state (AUROC and AveragePrecision with the same thresholds; Accuracy,
Precision and F1Score of one task) get one counting pass per update between them."""

from typing import Any, Dict, Iterable, Optional, Union

import torch
from torch import Tensor

from ._state import StreamingState

__all__ = ["MetricCollection"]


class MetricCollection(torch.nn.ModuleDict):
    """A dict of metrics (a list is keyed by class name); update / compute / reset / merge, and
    forward returns each metric's value on the batch. prefix and postfix go around the keys of the
    results, as torchmetrics'."""

    def __init__(self, metrics: Union[Dict[str, StreamingState], Iterable[StreamingState]],
                 prefix: Optional[str] = None, postfix: Optional[str] = None) -> None:
        if not isinstance(metrics, dict):
            metrics = list(metrics)
            names = [type(m).__name__ for m in metrics]
            if len(set(names)) != len(names):
                raise ValueError(f"MetricCollection: two metrics of one class in a list ({names}): pass a dict")
            metrics = dict(zip(names, metrics))
        for name, metric in metrics.items():
            if not isinstance(metric, StreamingState):
                raise ValueError(f"MetricCollection: {name} is not a fusedloss metric ({type(metric).__name__})")
        super().__init__()  # not ModuleDict's constructor: it calls update(), redefined below
        for name, metric in metrics.items():
            self[name] = metric
        self.prefix, self.postfix = prefix or "", postfix or ""

    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}{self.postfix}"

    def _batch_states(self, preds: Tensor, target: Tensor) -> Dict[str, Any]:
        """Each metric's batch state, computed once per distinct state."""
        shared: Dict[Any, Any] = {}
        states = {}
        for name, metric in self.items():
            metric._follow(target)
            key = metric._state_key()
            if key not in shared:
                shared[key] = metric._batch_state(preds, target)
            states[name] = shared[key]
        return states

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        """Adds a batch to every metric (one counting pass per distinct state)."""
        for name, state in self._batch_states(preds, target).items():
            self[name]._add_batch_state(state)

    def forward(self, preds: Tensor, target: Tensor) -> Dict[str, Any]:
        values = {}
        for name, state in self._batch_states(preds, target).items():
            self[name]._add_batch_state(state)
            values[self._key(name)] = self[name]._batch_value(state)
        return values

    def compute(self) -> Dict[str, Any]:
        return {self._key(name): metric.compute() for name, metric in self.items()}

    def reset(self) -> None:
        for metric in self.values():
            metric.reset()

    def sync(self, process_group=None) -> "MetricCollection":
        """Every metric's state combined across ranks (see StreamingState.sync)."""
        for metric in self.values():
            metric.sync(process_group)
        return self

    def merge(self, other: "MetricCollection") -> "MetricCollection":
        for name, metric in self.items():
            metric.merge(other[name])
        return self

"""fusedloss: loss functions as fused forward+backward LibTorch operators (CPU and CUDA).

    import fusedloss
    loss = fusedloss.functional.mse_loss(prediction, target)      # drop-in for torch.nn.functional
    criterion = fusedloss.nn.HuberLoss(delta=0.5)                  # drop-in for torch.nn
    f1 = fusedloss.metrics.f1_score(logits, labels, task="multiclass", num_classes=10)
    torch.ops.fusedloss.mse_loss(prediction, target, "mean")       # TorchScript / raw operator
"""

import torch

from . import _library

__version__ = "0.1.0"
library_path = _library.load()

from . import functional, metrics, nn, plots  # noqa: E402  (the operators must be registered first)


def check_errors():
    """Raises the first bad value (a class index out of range, a BCE input outside [0, 1], a hinge
    label other than -1/1, ...) that a CUDA kernel of fusedloss recorded since the last report.

    On CUDA, fusedloss never stops the stream to check values: the kernel records the first bad
    one, the affected rows get a NaN loss, and the error (the same typed error as on the CPU) is
    raised by the next fusedloss call once that work has finished, or by this function, which
    waits for the devices first (a synchronization: call it where one is cheap, e.g. after a
    CUDA-graph replay or at a logging step). Nothing to do on the CPU, where errors are immediate.
    """
    torch.ops.fusedloss.check_errors()


def set_synchronous_errors(on: bool) -> bool:
    """With True, every CUDA op of fusedloss waits for its kernel and raises a bad value at once,
    as on the CPU (environment variable FUSEDLOSS_SYNC_ERRORS=1 at import). Returns the previous
    setting."""
    return torch.ops.fusedloss.set_synchronous_errors(on)


def cpu_cache_clear() -> None:
    """Frees the CPU gradient blocks fusedloss keeps for reuse (see set_cpu_cache_limit)."""
    torch.ops.fusedloss.cpu_cache_clear()


def set_cpu_cache_limit(nbytes: int) -> int:
    """Sets the most bytes of CPU gradient memory fusedloss keeps for reuse; returns the previous
    limit. A fused loss's CPU gradient over 1 MiB goes to this cache when its tensor dies
    (x.grad = None, zero_grad(set_to_none=True)), and the next gradient of the same size reuses
    it: a training loop faults its gradient memory in once instead of every step. The default is
    2 GiB (FUSEDLOSS_CPU_CACHE_BYTES at import); 0 turns the cache off; the least recently
    returned blocks are freed first."""
    return torch.ops.fusedloss.set_cpu_cache_limit(nbytes)


def cpu_cache_bytes() -> int:
    """The bytes the CPU gradient cache holds now."""
    return torch.ops.fusedloss.cpu_cache_bytes()


__all__ = ["functional", "metrics", "nn", "plots", "library_path", "check_errors",
           "set_synchronous_errors", "cpu_cache_clear", "set_cpu_cache_limit", "cpu_cache_bytes",
           "__version__"]

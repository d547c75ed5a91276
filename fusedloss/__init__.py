"""fusedloss: loss functions as fused forward+backward LibTorch operators (CPU and CUDA).

    import fusedloss
    loss = fusedloss.functional.mse_loss(prediction, target)      # drop-in for torch.nn.functional
    criterion = fusedloss.nn.HuberLoss(delta=0.5)                  # drop-in for torch.nn
    f1 = fusedloss.metrics.f1_score(logits, labels, task="multiclass", num_classes=10)
    torch.ops.fusedloss.mse_loss(prediction, target, "mean")       # TorchScript / raw operator
"""

from . import _library

__version__ = "0.1.0"
library_path = _library.load()

from . import functional, metrics, nn  # noqa: E402  (the operators must be registered first)

__all__ = ["functional", "metrics", "nn", "library_path", "__version__"]

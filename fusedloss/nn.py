"""Loss modules: subclasses of the torch.nn losses with the same constructor arguments, whose
forward calls the fused operator. `torch.nn.MSELoss(...)` -> `fusedloss.nn.MSELoss(...)` is the
whole change, and isinstance checks against the torch class still hold."""

import torch
from torch import Tensor

from . import functional as F

__all__ = ["MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss"]


class MSELoss(torch.nn.MSELoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(torch.nn.L1Loss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(input, target, reduction=self.reduction)


class HuberLoss(torch.nn.HuberLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(torch.nn.SmoothL1Loss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)

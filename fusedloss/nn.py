"""Loss modules: subclasses of the torch.nn losses with the same constructor arguments, whose
forward calls the fused operator. `torch.nn.MSELoss(...)` -> `fusedloss.nn.MSELoss(...)` is the
whole change, and isinstance checks against the torch class still hold."""

import math
import warnings
from typing import Optional

import torch
from torch import Tensor
from torch.nn.modules.loss import _Loss

from . import functional as F

__all__ = [
    "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "PoissonNLLLoss", "GaussianNLLLoss",
    "KLDivLoss", "JSDLoss", "BCELoss",
    "BCEWithLogitsLoss",
    "SigmoidFocalLoss", "SoftMarginLoss", "HingeEmbeddingLoss", "HingeLoss", "MarginRankingLoss",
    "MultiLabelSoftMarginLoss", "CosineEmbeddingLoss", "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
    "CrossEntropyLoss", "NLLLoss", "NLLLoss2d", "MultiMarginLoss", "MultiLabelMarginLoss",
    "CTCLoss", "LinearCrossEntropyLoss", "replace_losses",
]


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


class PoissonNLLLoss(torch.nn.PoissonNLLLoss):
    def forward(self, log_input: Tensor, target: Tensor) -> Tensor:
        return F.poisson_nll_loss(log_input, target, log_input=self.log_input, full=self.full,
                                  eps=self.eps, reduction=self.reduction)


class GaussianNLLLoss(torch.nn.GaussianNLLLoss):
    def forward(self, input: Tensor, target: Tensor, var: Tensor) -> Tensor:
        return F.gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps,
                                   reduction=self.reduction)


class KLDivLoss(torch.nn.KLDivLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class BCELoss(torch.nn.BCELoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )


class MarginRankingLoss(torch.nn.MarginRankingLoss):
    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return F.margin_ranking_loss(input1, input2, target, margin=self.margin,
                                     reduction=self.reduction)


class CosineEmbeddingLoss(torch.nn.CosineEmbeddingLoss):
    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return F.cosine_embedding_loss(input1, input2, target, margin=self.margin,
                                       reduction=self.reduction)


class JSDLoss(_Loss):
    """Distillation loss: fusedloss.functional.jensen_shannon_divergence as a module (torch has
    none). forward(student_logits, teacher_logits, labels=None)."""

    def __init__(self, beta: float = 0.5, temperature: float = 1.0, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.beta = beta
        self.temperature = temperature
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        return F.jensen_shannon_divergence(input, target, labels, beta=self.beta,
                                           temperature=self.temperature,
                                           ignore_index=self.ignore_index,
                                           reduction=self.reduction)


class TripletMarginLoss(torch.nn.TripletMarginLoss):
    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return F.triplet_margin_loss(anchor, positive, negative, margin=self.margin, p=self.p,
                                     eps=self.eps, swap=self.swap, reduction=self.reduction)


class TripletMarginWithDistanceLoss(torch.nn.TripletMarginWithDistanceLoss):
    """Fused when the distance is torch's pairwise distance (the default); Python only, as
    torch's."""

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return F.triplet_margin_with_distance_loss(
            anchor, positive, negative, distance_function=self.distance_function,
            margin=self.margin, swap=self.swap, reduction=self.reduction)


class MultiLabelSoftMarginLoss(torch.nn.MultiLabelSoftMarginLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.multilabel_soft_margin_loss(input, target, weight=self.weight,
                                             reduction=self.reduction)


class SoftMarginLoss(torch.nn.SoftMarginLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.soft_margin_loss(input, target, reduction=self.reduction)


class HingeEmbeddingLoss(torch.nn.HingeEmbeddingLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.hinge_embedding_loss(input, target, margin=self.margin, reduction=self.reduction)


class SigmoidFocalLoss(_Loss):
    """Module form of fusedloss.functional.sigmoid_focal_loss (torchvision's formula)."""

    __constants__ = ["alpha", "gamma", "reduction"]

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none") -> None:
        super().__init__(reduction=reduction)
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.sigmoid_focal_loss(input, target, self.alpha, self.gamma, self.reduction)


class HingeLoss(_Loss):
    """Binary SVM loss max(0, margin - target * input) (squared: the L2-SVM), labels -1 and 1."""

    __constants__ = ["margin", "squared", "reduction"]

    def __init__(self, margin: float = 1.0, squared: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.margin = margin
        self.squared = squared

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.hinge_loss(input, target, self.margin, self.squared, self.reduction)


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss, fused; keyword-only extras z_loss, softcap and check_target as
    in fusedloss.functional.cross_entropy (defaults: torch's behaviour)."""

    __constants__ = ["ignore_index", "reduction", "label_smoothing", "z_loss", "softcap",
                     "check_target"]
    # Class-level defaults: replace_losses switches a torch module's class without running __init__.
    z_loss: float = 0.0
    softcap: Optional[float] = None
    check_target: bool = True

    def __init__(self, weight: Optional[Tensor] = None, size_average=None, ignore_index: int = -100,
                 reduce=None, reduction: str = "mean", label_smoothing: float = 0.0, *,
                 z_loss: float = 0.0, softcap: Optional[float] = None,
                 check_target: bool = True) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.z_loss = z_loss
        self.softcap = softcap
        self.check_target = check_target

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            input, target, weight=self.weight, ignore_index=self.ignore_index,
            reduction=self.reduction, label_smoothing=self.label_smoothing, z_loss=self.z_loss,
            softcap=self.softcap, check_target=self.check_target,
        )


class NLLLoss(torch.nn.NLLLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


with warnings.catch_warnings():  # subclassing torch's deprecated class warns at import
    warnings.simplefilter("ignore", FutureWarning)

    class NLLLoss2d(torch.nn.NLLLoss2d):
        """torch's deprecated alias of NLLLoss, kept so replace_losses swaps it too."""

        def forward(self, input: Tensor, target: Tensor) -> Tensor:
            return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                              reduction=self.reduction)


class MultiMarginLoss(torch.nn.MultiMarginLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.multi_margin_loss(input, target, p=self.p, margin=self.margin,
                                   weight=self.weight, reduction=self.reduction)


class MultiLabelMarginLoss(torch.nn.MultiLabelMarginLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.multilabel_margin_loss(input, target, reduction=self.reduction)


class CTCLoss(torch.nn.CTCLoss):
    def forward(self, log_probs: Tensor, targets: Tensor, input_lengths: Tensor,
                target_lengths: Tensor) -> Tensor:
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank,
                          self.reduction, self.zero_infinity)


_TorchLinearCrossEntropyLoss = getattr(torch.nn, "LinearCrossEntropyLoss", None)


class LinearCrossEntropyLoss(_TorchLinearCrossEntropyLoss or _Loss):
    """A linear layer (V, H) followed by cross entropy, fused: torch.nn.LinearCrossEntropyLoss's
    constructor (torch >= 2.13; this class subclasses it there) plus the keyword-only extras
    z_loss, softcap and chunk_size. forward(input, target) never materializes the logits."""

    __constants__ = ["reduction", "label_smoothing", "z_loss", "softcap", "chunk_size"]
    ignore_index: Optional[int]
    # Class-level defaults: replace_losses switches a torch module's class without running __init__.
    z_loss: float = 0.0
    softcap: Optional[float] = None
    chunk_size: Optional[int] = None

    def __init__(self, in_features: int, num_classes: int, *, out_features=(), bias: bool = False,
                 device=None, dtype=None, reduction: str = "mean", weight: Optional[Tensor] = None,
                 ignore_index: Optional[int] = None, label_smoothing: float = 0.0, options=None,
                 z_loss: float = 0.0, softcap: Optional[float] = None,
                 chunk_size: Optional[int] = None) -> None:
        if _TorchLinearCrossEntropyLoss is not None:
            super().__init__(in_features, num_classes, out_features=tuple(out_features), bias=bias,
                             device=device, dtype=dtype,
                             reduction=reduction, weight=weight, ignore_index=ignore_index,
                             label_smoothing=label_smoothing, options=options)
        else:
            super().__init__(reduction=reduction)
            self.register_buffer("weight", weight)
            self.num_classes = num_classes
            self.out_features = tuple(out_features)
            self.ignore_index = ignore_index
            self.label_smoothing = label_smoothing
            self.options = options
            self.linear = torch.nn.Linear(in_features, math.prod(out_features, start=num_classes),
                                          bias=bias, device=device, dtype=dtype)
        self.z_loss = z_loss
        self.softcap = softcap
        self.chunk_size = chunk_size
        if chunk_size is None and options is not None:
            self.chunk_size = getattr(options, "batch_chunk_size", None)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        ignore = self.ignore_index  # a local, so TorchScript refines the Optional
        ignore_index = -100 if ignore is None else ignore
        # torch keeps the (C, d1..dK, H) weight of out_features as a (C d1..dK, H) Linear.
        weight_shape = [self.num_classes]
        for size in self.out_features:
            weight_shape.append(size)
        bias = self.linear.bias
        if bias is not None:
            bias = bias.reshape(weight_shape)
        weight_shape.append(self.linear.in_features)
        return torch.ops.fusedloss.linear_cross_entropy(
            input, self.linear.weight.reshape(weight_shape), target, bias, self.weight,
            ignore_index,
            self.reduction, self.label_smoothing, z_loss=self.z_loss, softcap=self.softcap,
            chunk_size=self.chunk_size,
        )


# torch.nn loss class -> its fusedloss drop-in (same constructor, same state).
DROP_INS = {
    torch.nn.MSELoss: MSELoss,
    torch.nn.L1Loss: L1Loss,
    torch.nn.HuberLoss: HuberLoss,
    torch.nn.SmoothL1Loss: SmoothL1Loss,
    torch.nn.PoissonNLLLoss: PoissonNLLLoss,
    torch.nn.GaussianNLLLoss: GaussianNLLLoss,
    torch.nn.KLDivLoss: KLDivLoss,
    torch.nn.MarginRankingLoss: MarginRankingLoss,
    torch.nn.MultiLabelSoftMarginLoss: MultiLabelSoftMarginLoss,
    torch.nn.CosineEmbeddingLoss: CosineEmbeddingLoss,
    torch.nn.TripletMarginLoss: TripletMarginLoss,
    torch.nn.TripletMarginWithDistanceLoss: TripletMarginWithDistanceLoss,
    torch.nn.BCELoss: BCELoss,
    torch.nn.BCEWithLogitsLoss: BCEWithLogitsLoss,
    torch.nn.SoftMarginLoss: SoftMarginLoss,
    torch.nn.HingeEmbeddingLoss: HingeEmbeddingLoss,
    torch.nn.CrossEntropyLoss: CrossEntropyLoss,
    torch.nn.NLLLoss: NLLLoss,
    torch.nn.NLLLoss2d: NLLLoss2d,
    torch.nn.MultiMarginLoss: MultiMarginLoss,
    torch.nn.MultiLabelMarginLoss: MultiLabelMarginLoss,
    torch.nn.CTCLoss: CTCLoss,
}
if _TorchLinearCrossEntropyLoss is not None:  # torch >= 2.13
    DROP_INS[_TorchLinearCrossEntropyLoss] = LinearCrossEntropyLoss


def replace_losses(module: torch.nn.Module) -> torch.nn.Module:
    """Switches every torch.nn loss module in `module`'s tree (`module` itself included) to its
    fusedloss drop-in, in place, and returns `module`.

    Each fusedloss module subclasses the torch one and keeps its state, so the switch only
    changes the class: arguments, buffers (weight, pos_weight), hooks and state_dict keys stay.
    Subclasses of the torch losses are left alone: their forward may do something else. A
    torch.nn.LinearCrossEntropyLoss's `options` (torch's chunking) do not carry over: the fused
    op picks its own chunks.
    """
    for submodule in module.modules():
        replacement = DROP_INS.get(type(submodule))
        if replacement is not None:
            submodule.__class__ = replacement
    return module

"""Fused losses with the signatures, defaults and semantics of torch.nn.functional.

Each function calls its operator in torch.ops.fusedloss; every one is TorchScript-compatible.
"""

import warnings
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn import _reduction as _Reduction

from . import vocab_parallel as _vocab_parallel
from .vocab_parallel import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

__all__ = [
    "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "poisson_nll_loss", "gaussian_nll_loss",
    "kl_div", "jensen_shannon_divergence",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss",
    "soft_margin_loss", "hinge_embedding_loss", "hinge_loss", "margin_ranking_loss",
    "multilabel_soft_margin_loss", "cosine_embedding_loss", "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
    "cross_entropy", "cross_entropy_with_z_loss", "nll_loss", "multi_margin_loss",
    "multilabel_margin_loss", "ctc_loss",
    "linear_cross_entropy", "vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy",
    "linear_log_probs", "linear_jsd", "linear_kl_div", "dpo_loss", "grpo_loss", "linear_dpo_loss",
    "linear_grpo_loss",
]


def _warn_if_sizes_differ(input: Tensor, target: Tensor) -> None:
    # Same words as torch.nn.functional, so filters written for torch's warning keep working.
    if target.size() != input.size():
        warnings.warn(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=3,
        )


def _legacy_reduction(size_average: Optional[bool], reduce: Optional[bool], reduction: str) -> str:
    if size_average is not None or reduce is not None:
        return _Reduction.legacy_get_string(size_average, reduce)
    return reduction


def _apply_weight(loss: Tensor, input: Tensor, weight: Tensor, reduction: str,
                  mean_over_weights: bool) -> Tensor:
    """torch's optional per-element `weight` (torch >= 2.10) on an unreduced fused loss.

    mse_loss and l1_loss divide the weighted sum by the sum of the weights for 'mean';
    huber_loss takes the plain mean of the weighted losses. Both as torch does.
    """
    if weight.size() != input.size():
        raise ValueError("Weights and input must have the same size.")
    weighted = loss * weight
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return weighted.sum()
    if reduction == "mean":
        return weighted.sum() / weight.sum() if mean_over_weights else weighted.mean()
    raise ValueError(f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'.")


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
    weight: Optional[Tensor] = None,
) -> Tensor:
    """Mean squared error, (input - target)^2; see torch.nn.functional.mse_loss."""
    _warn_if_sizes_differ(input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if weight is not None:
        loss = torch.ops.fusedloss.mse_loss(input, target, "none")
        return _apply_weight(loss, input, weight, reduction, mean_over_weights=True)
    return torch.ops.fusedloss.mse_loss(input, target, reduction)


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
    weight: Optional[Tensor] = None,
) -> Tensor:
    """Mean absolute error, |input - target|; see torch.nn.functional.l1_loss."""
    _warn_if_sizes_differ(input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if weight is not None:
        loss = torch.ops.fusedloss.l1_loss(input, target, "none")
        return _apply_weight(loss, input, weight, reduction, mean_over_weights=True)
    return torch.ops.fusedloss.l1_loss(input, target, reduction)


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Optional[Tensor] = None,
) -> Tensor:
    """Huber loss: quadratic within |input - target| < delta, linear outside; see torch's."""
    _warn_if_sizes_differ(input, target)
    if weight is not None:
        loss = torch.ops.fusedloss.huber_loss(input, target, "none", delta)
        return _apply_weight(loss, input, weight, reduction, mean_over_weights=False)
    return torch.ops.fusedloss.huber_loss(input, target, reduction, delta)


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    """Smooth L1 (Huber / beta); beta = 0 is L1; see torch.nn.functional.smooth_l1_loss."""
    _warn_if_sizes_differ(input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.smooth_l1_loss(input, target, reduction, beta)



def poisson_nll_loss(
    input: Tensor,
    target: Tensor,
    log_input: bool = True,
    full: bool = False,
    size_average: Optional[bool] = None,
    eps: float = 1e-8,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """Poisson negative log likelihood; see torch.nn.functional.poisson_nll_loss."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.poisson_nll_loss(input, target, log_input, full, eps, reduction)

def gaussian_nll_loss(
    input: Tensor,
    target: Tensor,
    var: Union[Tensor, float],
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Tensor:
    """Gaussian negative log likelihood, (log v + (input - target)^2 / v) / 2 with v = max(var, eps);
    see torch.nn.functional.gaussian_nll_loss. Gradients for input, target and var in one pass."""
    if not isinstance(var, Tensor):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        var = torch.full((), float(var), dtype=input.dtype, device=input.device).expand(input.shape)
    return torch.ops.fusedloss.gaussian_nll_loss(input, target, var, full, eps, reduction)


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """Kullback-Leibler divergence of log-probabilities `input` from `target` (probabilities, or
    log-probabilities with log_target); see torch.nn.functional.kl_div. 'batchmean' divides the
    sum by input.size(0), the KL divergence per sample."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction == "mean" and not torch.compiler.is_compiling():  # dynamo cannot trace warn
        # torch's words, so that filters written for its warning keep working.
        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support size."
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
            "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
            stacklevel=2,
        )
    return torch.ops.fusedloss.kl_div(input, target, reduction, log_target)


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """Binary cross entropy on probabilities; see torch.nn.functional.binary_cross_entropy."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if target.size() != input.size():
        raise ValueError(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}) is deprecated. Please ensure they have the same size."
        )
    return torch.ops.fusedloss.binary_cross_entropy(input, target, weight, reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
    pos_weight: Optional[Tensor] = None,
) -> Tensor:
    """Sigmoid + binary cross entropy, fused and stable for any logit; see torch's."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if target.size() != input.size():
        raise ValueError(
            f"Target size ({target.size()}) must be the same as input size ({input.size()})"
        )
    return torch.ops.fusedloss.binary_cross_entropy_with_logits(
        input, target, weight, pos_weight, reduction
    )


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Focal loss of RetinaNet on logits, as torchvision.ops.sigmoid_focal_loss:
    alpha_t * BCE-with-logits * (1 - p_t)^gamma; alpha < 0 disables the alpha weighting."""
    return torch.ops.fusedloss.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)


def margin_ranking_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0.0,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """max(0, margin - target * (input1 - input2)), labels +-1; see
    torch.nn.functional.margin_ranking_loss. target broadcasts to input1 and input2 (it may not
    enlarge their shape) and takes no gradient."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.margin_ranking_loss(input1, input2, target, margin, reduction)


def cosine_embedding_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0.0,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """1 - cos(input1, input2) where target is 1, max(0, cos - margin) where it is -1; see
    torch.nn.functional.cosine_embedding_loss. One pass per row pair writes both gradients."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.cosine_embedding_loss(input1, input2, target, margin, reduction)


def multilabel_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """Per row, sum of max(0, 1 - input[y] + input[i]) over its labels y (target's entries before
    the first -1) and non-labels i, over C; see torch.nn.functional.multilabel_margin_loss. One
    fused pass writes the loss and the gradient; nothing of the size of the input is saved but
    the gradient."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.multilabel_margin_loss(input, target, reduction)


def _lengths_tensor(lengths: Union[Tensor, List[int]]) -> Tensor:
    if isinstance(lengths, Tensor):
        return lengths
    return torch.tensor(lengths, dtype=torch.long)


def ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Union[Tensor, List[int]],
    target_lengths: Union[Tensor, List[int]],
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    """Connectionist temporal classification loss; see torch.nn.functional.ctc_loss.

    log_probs (T, N, C) or unbatched (T, C); targets padded (N, S) or concatenated
    (sum(target_lengths)); the lengths as tensors or lists. One fused call runs the alpha and
    beta recursions and writes the gradient; no lattice is kept for backward. Unlike torch, a
    label outside [0, C) (IndexError) or equal to blank (ValueError) is refused."""
    return torch.ops.fusedloss.ctc_loss(log_probs, targets, _lengths_tensor(input_lengths),
                                        _lengths_tensor(target_lengths), blank, reduction,
                                        zero_infinity)


def jensen_shannon_divergence(
    input: Tensor,
    target: Tensor,
    labels: Optional[Tensor] = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Distillation loss between the student's logits `input` and the teacher's logits `target`
    (same shape, classes last), over softmax(logits / temperature):

    beta = 0: forward KL(teacher || student); beta = 1: reverse KL(student || teacher); otherwise
    the generalized Jensen-Shannon divergence beta KL(P || M) + (1 - beta) KL(Q || M),
    M = beta P + (1 - beta) Q. Rows whose `labels` entry is ignore_index count 0; 'mean' averages
    over the other rows, 'sum' adds them, 'none' returns one value per row. Only the student
    takes a gradient (the teacher must not require one). Multiply by temperature**2 for the
    usual distillation scaling. One fused pass per row; nothing N x C is kept but the gradient."""
    return torch.ops.fusedloss.jensen_shannon_divergence(input, target, labels, float(beta),
                                                         float(temperature), ignore_index,
                                                         reduction)


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-6,
    swap: bool = False,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """max(0, margin + d(anchor, positive) - d(anchor, negative)), d(x, y) = ||x - y + eps||_p over
    the last dimension (with swap, the negative distance is the smaller of d(anchor, negative) and
    d(positive, negative)); see torch.nn.functional.triplet_margin_loss. One pass per triplet of
    rows writes the three gradients."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    return torch.ops.fusedloss.triplet_margin_loss(anchor, positive, negative, float(margin),
                                                   float(p), float(eps), swap, reduction)


def _fused_distance(distance_function: Optional[Callable[[Tensor, Tensor], Tensor]]):
    """(p, eps) when distance_function is torch's pairwise distance (the default), else None."""
    if distance_function is None or distance_function is torch.pairwise_distance:
        return 2.0, 1e-6
    if type(distance_function) is torch.nn.PairwiseDistance and not distance_function.keepdim:
        return float(distance_function.norm), float(distance_function.eps)
    return None


def triplet_margin_with_distance_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    distance_function: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """triplet_margin_loss with a distance of the caller's choice; see
    torch.nn.functional.triplet_margin_with_distance_loss. Fused (triplet_margin_loss's kernel)
    when the distance is torch's pairwise distance: the default, torch.pairwise_distance or a
    torch.nn.PairwiseDistance without keepdim; torch's formula for any other callable. Python
    only, as torch's (a callable argument cannot be scripted)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    if not (anchor.ndim == positive.ndim == negative.ndim):
        raise RuntimeError(
            "The anchor, positive, and negative tensors are expected to have the same number of "
            f"dimensions, but got: anchor {anchor.ndim}D, positive {positive.ndim}D, and negative "
            f"{negative.ndim}D inputs")
    fused = _fused_distance(distance_function)
    if fused is not None:
        return torch.ops.fusedloss.triplet_margin_loss(anchor, positive, negative, float(margin),
                                                       fused[0], fused[1], swap, reduction)
    assert distance_function is not None
    dist_pos = distance_function(anchor, positive)
    dist_neg = distance_function(anchor, negative)
    if swap:
        dist_neg = torch.minimum(dist_neg, distance_function(positive, negative))
    loss = torch.clamp_min(margin + dist_pos - dist_neg, 0)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def multilabel_soft_margin_loss(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """Per sample, the mean over classes of binary cross entropy with logits (weighted per class);
    see torch.nn.functional.multilabel_soft_margin_loss. One fused pass."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.multilabel_soft_margin_loss(input, target, weight, reduction)


def soft_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """log(1 + exp(-target * input)), computed without overflow; see torch's."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.soft_margin_loss(input, target, reduction)


def hinge_embedding_loss(
    input: Tensor,
    target: Tensor,
    margin: float = 1.0,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """input where target is 1, max(0, margin - input) where it is -1; see torch's."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.hinge_embedding_loss(input, target, margin, reduction)


def hinge_loss(
    input: Tensor,
    target: Tensor,
    margin: float = 1.0,
    squared: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Binary SVM (max-margin) loss max(0, margin - target * input), squared for the L2-SVM;
    target holds the labels -1 and 1 (anything else is a ValueError)."""
    return torch.ops.fusedloss.hinge_loss(input, target, margin, squared, reduction)


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None,
    ignore_index: int = -100,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    check_target: bool = True,
) -> Tensor:
    """Softmax cross entropy on logits, fused with its gradient; see torch's cross_entropy.

    Class-index targets ((N), (N, d1, ...), or 0-d for an input (C)) or class probabilities
    (target of the input's shape). Extras beyond torch's signature (pass them by keyword): z_loss adds z_loss * logsumexp^2 per
    (non-ignored) row, averaged over those rows for 'mean' (PaLM's auxiliary loss); softcap
    passes the logits through softcap * tanh(logits / softcap) first (Gemma 2);
    check_target=False skips the range check of class indices (on CUDA a host synchronization):
    a row with an out-of-range target then gets a NaN loss, never an out-of-bounds access.
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if not torch.jit.is_scripting():
        if _vocab_parallel.sharded_on_classes(input):  # a DTensor sharded on the classes
            return _vocab_parallel.dtensor_cross_entropy(
                input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
                check_target)
    return torch.ops.fusedloss.cross_entropy(
        input, target, weight, ignore_index, reduction, label_smoothing,
        z_loss=z_loss, softcap=softcap, check_target=check_target,
    )


def cross_entropy_with_z_loss(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    check_target: bool = True,
) -> Tuple[Tensor, Tensor]:
    """cross_entropy that also returns its z-loss part, reduced the same way, for logging.

    Returns (loss, z): loss already includes z, which carries no gradient of its own.
    """
    return torch.ops.fusedloss.cross_entropy_with_z_loss(
        input, target, weight, ignore_index, reduction, label_smoothing,
        z_loss=z_loss, softcap=softcap, check_target=check_target,
    )


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None,
    ignore_index: int = -100,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
    check_target: bool = True,
) -> Tensor:
    """Negative log likelihood of log-probabilities (pair with log_softmax); see torch's.

    Out-of-range targets raise IndexError on every device (check_target=False: NaN instead)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.nll_loss(
        input, target, weight, ignore_index, reduction, check_target=check_target
    )


def multi_margin_loss(
    input: Tensor,
    target: Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class hinge: sum over j != y of w_y * max(0, margin - x_y + x_j)^p / C, p in {1, 2};
    see torch.nn.functional.multi_margin_loss."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return torch.ops.fusedloss.multi_margin_loss(input, target, p, margin, weight, reduction)


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Optional[Tensor] = None,
    target: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    *,
    linear_bias: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    reduction: str = "mean",
    ignore_index: Optional[int] = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    chunk_size: Optional[int] = None,
    check_target: bool = True,
    options=None,
) -> Tensor:
    """cross_entropy(input @ linear_weight.T + bias, target) without materializing the logits.

    input (N, H) or (B, T, H); linear_weight (V, H), or (V, d1..dK, H) for K more class-like
    dimensions (torch's out_features); target class indices (N) or (B, T) (then (N, d1..dK)), or
    class probabilities of the logits' shape (N, V) (then (N, V, d1..dK)); bias (also
    linear_bias=, torch's name) (V) or (V, d1..dK). A probability target that requires grad
    takes the unfused path (logits materialized, as torch's reference path). Accepts
    torch.nn.functional.linear_cross_entropy's call (linear_bias=, weight= as class weights,
    ignore_index=None meaning -100, options= whose batch_chunk_size is used as chunk_size) and
    the positional (input, weight, target, bias) one: a `weight` of 2 or more dimensions with no
    linear_weight is the linear weight. Rows are processed chunk_size at a time; None picks a
    32nd of the rows with at most 32 MiB of logits on the CPU, the rows whose logits take a 16th
    of the device's memory (64 MiB to 1 GiB) on CUDA, and at least 128. z_loss, softcap and
    check_target as in cross_entropy.
    """
    if linear_weight is None and weight is not None and weight.dim() >= 2:
        linear_weight, weight = weight, None
    if linear_weight is None or target is None:
        raise TypeError("linear_cross_entropy() needs input, linear_weight (V, H) and target")
    if bias is not None and linear_bias is not None:
        raise TypeError("linear_cross_entropy() got both bias and linear_bias")
    if chunk_size is None and options is not None:
        chunk_size = getattr(options, "batch_chunk_size", None)
    return torch.ops.fusedloss.linear_cross_entropy(
        input, linear_weight, target, bias if bias is not None else linear_bias, weight,
        -100 if ignore_index is None else ignore_index, reduction, label_smoothing,
        z_loss=z_loss, softcap=softcap, chunk_size=chunk_size, check_target=check_target,
    )


def linear_log_probs(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    bias: Optional[Tensor] = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
    *,
    ignore_index: int = -100,
    chunk_size: Optional[int] = None,
    check_target: bool = True,
):
    """Per-token log p(target) under softmax((input @ linear_weight.T + bias) / temperature), and
    with return_entropy=True that softmax's entropy too, without materializing the logits.

    input (N, H) or (B, T, H); linear_weight (V, H); target token ids of input's leading shape;
    bias (V). Returns a tensor of the leading shape (or a (log_probs, entropy) pair), in float32
    for float16/bfloat16 input (float64 for float64): a log-probability rounded to bfloat16 is off
    by up to 0.4%, which a PPO ratio exp(logp - old_logp) would exponentiate. Rows whose target is
    ignore_index give 0 and no gradient. Differentiable w.r.t. input, linear_weight and bias
    through both outputs; rows are processed chunk_size at a time (None: as linear_cross_entropy),
    and backward computes each chunk's logits again rather than keeping them."""
    log_probs, entropy = torch.ops.fusedloss.linear_log_probs(
        input, linear_weight, target, bias, temperature=float(temperature),
        ignore_index=ignore_index, chunk_size=chunk_size, check_target=check_target)
    if return_entropy:
        return log_probs, entropy
    return log_probs


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    *,
    chosen_lengths: Optional[Tensor] = None,
    rejected_lengths: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tuple[Tensor, Tensor, Tensor]:
    """Direct Preference Optimization on sequence log-probabilities (summed over each completion's
    tokens), with TRL 1.9.0's formulas. With x = (chosen_logps - ref_chosen_logps) -
    (rejected_logps - ref_rejected_logps): 'sigmoid' -logsigmoid(beta x); 'hinge' relu(1 - beta x);
    'ipo' (x' - 1 / (2 beta))^2 where x' divides each log-ratio by its completion's length
    (chosen_lengths, rejected_lengths: token counts); 'robust' (label_smoothing in [0, 0.5), the
    only loss type that uses it, as in TRL). Returns (loss, chosen_rewards, rejected_rewards); the
    rewards are beta times the detached log-ratios."""
    return torch.ops.fusedloss.dpo_loss(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, float(beta), loss_type,
        float(label_smoothing), chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths,
        reduction=reduction)


def grpo_loss(
    per_token_logps: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    old_per_token_logps: Optional[Tensor] = None,
    ref_per_token_logps: Optional[Tensor] = None,
    *,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: Optional[float] = None,
    delta: Optional[float] = None,
    loss_type: str = "dapo",
    importance_sampling_level: str = "token",
    max_completion_length: Optional[int] = None,
    num_items_in_batch: Optional[Tensor] = None,
) -> Tensor:
    """GRPO's clipped policy loss on per-token log-probabilities (B, T), with TRL 1.9.0's formulas
    and defaults: ratio r = exp(logp - old_logp) (old_logp = logp.detach() when None), per token
    -min(r A, clip(r, 1 - epsilon_low, 1 + epsilon_high) A) (epsilon_high None: epsilon_low;
    delta caps r first) plus beta times the k3 estimate of KL to the reference. Normalised as
    loss_type says: 'grpo' per sequence then averaged; 'bnpo' over the batch's tokens; 'dr_grpo'
    by B * max_completion_length; 'dapo' by num_items_in_batch (the active tokens of the whole
    accumulated batch; None: this batch's). importance_sampling_level 'sequence' is GSPO. Gradient
    accumulation scaling is the caller's (TRL divides 'grpo', 'bnpo' and 'dr_grpo' by the steps)."""
    return torch.ops.fusedloss.grpo_loss(
        per_token_logps, advantages, completion_mask, old_per_token_logps, ref_per_token_logps,
        beta=float(beta), epsilon_low=float(epsilon_low), epsilon_high=epsilon_high, delta=delta,
        loss_type=loss_type, importance_sampling_level=importance_sampling_level,
        max_completion_length=max_completion_length, num_items_in_batch=num_items_in_batch)


def linear_grpo_loss(
    input: Tensor,
    linear_weight: Tensor,
    completion_ids: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    old_per_token_logps: Optional[Tensor] = None,
    ref_per_token_logps: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    *,
    temperature: float = 1.0,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: Optional[float] = None,
    delta: Optional[float] = None,
    loss_type: str = "dapo",
    importance_sampling_level: str = "token",
    max_completion_length: Optional[int] = None,
    num_items_in_batch: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """grpo_loss on the log-probabilities of completion_ids (B, T) under the LM head: input (B, T, H)
    hidden states, linear_weight (V, H), temperature as the sampler's. The (B, T, V) logits are
    never held (linear_log_probs)."""
    return torch.ops.fusedloss.linear_grpo_loss(
        input, linear_weight, completion_ids, advantages, completion_mask, old_per_token_logps,
        ref_per_token_logps, bias, temperature=float(temperature), beta=float(beta),
        epsilon_low=float(epsilon_low), epsilon_high=epsilon_high, delta=delta,
        loss_type=loss_type, importance_sampling_level=importance_sampling_level,
        max_completion_length=max_completion_length, num_items_in_batch=num_items_in_batch,
        chunk_size=chunk_size)


def linear_dpo_loss(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    completion_mask: Tensor,
    ref_chosen_logps: Optional[Tensor] = None,
    ref_rejected_logps: Optional[Tensor] = None,
    *,
    ref_input: Optional[Tensor] = None,
    ref_weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    ref_bias: Optional[Tensor] = None,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    chunk_size: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """dpo_loss (reduction 'mean') from the LM head: input (2B, T, H) holds the chosen completions'
    hidden states, then the rejected ones' (TRL's concatenated batch); target (2B, T) the next
    tokens; completion_mask (2B, T) which tokens count. The reference's sequence log-probs are
    given (ref_chosen_logps, ref_rejected_logps: (B)) or computed without gradient from its hidden
    states and head (ref_input, ref_weight, ref_bias). No (2B, T, V) logits are held."""
    return torch.ops.fusedloss.linear_dpo_loss(
        input, linear_weight, target, completion_mask, ref_chosen_logps, ref_rejected_logps,
        ref_input=ref_input, ref_weight=ref_weight, linear_bias=bias, ref_bias=ref_bias,
        beta=float(beta), loss_type=loss_type, label_smoothing=float(label_smoothing),
        temperature=float(temperature), chunk_size=chunk_size)


def linear_jsd(
    input: Tensor,
    linear_weight: Tensor,
    teacher_input: Tensor,
    teacher_weight: Optional[Tensor] = None,
    labels: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    teacher_bias: Optional[Tensor] = None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
) -> Tensor:
    """jensen_shannon_divergence(input @ linear_weight.T + bias, teacher logits) without
    materializing either's logits: the student's hidden states input (N, H) or (B, T, H) and head
    linear_weight (V, H); the teacher's hidden states teacher_input (..., H_teacher) and head
    teacher_weight (V, H_teacher), or, with teacher_weight None, the teacher's logits (..., V) in
    teacher_input. beta 0: forward KL(teacher || student); 1: reverse KL; otherwise the
    generalized JSD. Rows whose labels entry is ignore_index count 0; 'mean' averages the others.
    Only the student takes gradients (input, linear_weight, bias), accumulated in float32 across
    chunks for float16/bfloat16."""
    return torch.ops.fusedloss.linear_jsd(
        input, linear_weight, teacher_input, teacher_weight, labels, bias, teacher_bias,
        beta=float(beta), temperature=float(temperature), ignore_index=ignore_index,
        reduction=reduction, chunk_size=chunk_size)


def linear_kl_div(
    input: Tensor,
    linear_weight: Tensor,
    teacher_input: Tensor,
    teacher_weight: Optional[Tensor] = None,
    labels: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    teacher_bias: Optional[Tensor] = None,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
) -> Tensor:
    """The distillation KL(teacher || student) per token from hidden states and heads: linear_jsd
    with beta = 0 (see there). Multiply by temperature**2 for the usual distillation scaling."""
    return torch.ops.fusedloss.linear_kl_div(
        input, linear_weight, teacher_input, teacher_weight, labels, bias, teacher_bias,
        temperature=float(temperature), ignore_index=ignore_index, reduction=reduction,
        chunk_size=chunk_size)

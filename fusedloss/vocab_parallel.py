"""Cross entropy of logits sharded along the classes across the ranks of a process group (the
tensor-parallel LM head of Megatron-LM and torchtitan's loss_parallel).

Each rank holds the logits of its own classes, (N, V_rank); the targets (N) are the same on every
rank and index the whole vocabulary, rank r holding the classes from the sum of the lower ranks'
V_rank on (shards may be uneven). The loss and the gradient of the local logits come from two
collectives, both all-gathers of small tensors, never of logits:

1. the shapes and the target check: (N, V_rank, first bad target, its value, a fingerprint of
   the targets) from every rank. It gives the class offsets, and every rank raises the same
   error when the ranks disagree on N or on the targets, or when a target is outside the
   vocabulary, so that no rank is left waiting in the next collective;
2. per-row statistics, (N, 4): the local maximum, the sum of exp(x - local maximum), the target's
   logit where this rank holds it (else 0) and the label-smoothing sum. Every rank merges them
   into the same logsumexp, and writes the gradient of its own logits locally.

The gradient is computed in the forward, in one buffer that becomes input.grad (backward scales
it by grad_output). The collectives are torch's functional collectives, so the function traces
under torch.compile (fullgraph); compiled, it skips the host-side checks (a bad target then gives
a NaN loss, as check_target=False does). The local arithmetic is composed from ATen ops in this
version, not a fused kernel.
"""

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

_OP = "fusedloss.vocab_parallel_cross_entropy"


def _all_gather(tensor: Tensor, group) -> Tensor:
    """(world, *tensor.shape): every rank's tensor, in rank order."""
    import torch.distributed._functional_collectives as funcol  # not at import: needs c10d
    gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor  # torch < 2.10
    gathered = gather(tensor.contiguous(), 0, group)
    gathered = funcol.wait_tensor(gathered) if hasattr(funcol, "wait_tensor") else gathered
    return gathered.view(-1, *tensor.shape)


def _shape_and_targets(input: Tensor, target: Tensor) -> Tensor:
    """(rows, classes, a fingerprint of the targets): what the ranks must agree on, or learn."""
    position = torch.arange(target.numel(), device=target.device)
    fingerprint = ((target + 7) * (position % 1009 + 1)).sum()
    size = torch.tensor(input.shape, dtype=torch.int64, device=target.device)
    return torch.cat([size, fingerprint.view(1)])


def _check_agreement(every: Tensor, target: Tensor, ignore_index: int, vocab: int,
                     check_target: bool) -> None:
    """Raises on every rank the same error (`every` is the same on every rank)."""
    rows, classes, prints = (every[:, i].tolist() for i in range(3))
    if len(set(rows)) != 1:
        raise ValueError(f"{_OP}: the ranks disagree on the number of rows (input.size(0)): "
                         + ", ".join(f"rank {r} has {n}" for r, n in enumerate(rows)))
    if min(classes) < 1:
        raise ValueError(f"{_OP}: every rank must hold at least one class (input.size(1)); got "
                         + ", ".join(f"rank {r}: {c}" for r, c in enumerate(classes)))
    if len(set(prints)) != 1:
        raise ValueError(f"{_OP}: the ranks disagree on the targets (each rank holds every row's "
                         "target and a shard of the classes: the targets must be the same)")
    if check_target:
        bad = (target != ignore_index) & ((target < 0) | (target >= vocab))
        if bool(bad.any()):
            position = int(bad.nonzero()[0, 0])
            raise IndexError(f"{_OP}: target {int(target[position])} at position {position} is out "
                             f"of bounds: the vocabulary has {vocab} classes over {len(classes)} "
                             f"ranks ({' + '.join(map(str, classes))}), ignore_index is "
                             f"{ignore_index}")


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, target: Tensor, weight: Optional[Tensor], group,
                ignore_index: int, reduction: str, label_smoothing: float, z_loss: float,
                softcap: Optional[float], check_target: bool) -> Tensor:
        rows, classes = input.shape
        acc = torch.float64 if input.dtype == torch.float64 else torch.float32
        device = input.device
        zero = torch.zeros((), dtype=acc, device=device)
        rank = dist.get_rank(group)

        # 1. Shapes, class offsets and the target check, the same on every rank.
        every = _all_gather(_shape_and_targets(input, target), group)
        offset = every[:rank, 1].sum()
        vocab = every[:, 1].sum()
        if not torch.compiler.is_compiling():
            vocab_int = int(vocab)
            _check_agreement(every, target, ignore_index, vocab_int, check_target)
            if weight is not None and weight.shape != (vocab_int,):
                raise ValueError(f"{_OP}: weight must hold one value per class of the whole "
                                 f"vocabulary ({vocab_int}, the sum of the ranks' shards), got "
                                 f"shape {tuple(weight.shape)}")

        # 2. Local statistics, in the accumulation dtype; g becomes the gradient.
        g = input.to(acc, copy=True)
        slope = None
        if softcap is not None:
            g.div_(softcap).tanh_()
            slope = 1 - g * g  # d softcap(x) / dx
            g.mul_(softcap)
        local_target = target - offset
        in_shard = (local_target >= 0) & (local_target < classes)
        safe_local = local_target.clamp(0, classes - 1)
        target_logit = torch.where(in_shard, g.gather(1, safe_local[:, None]).squeeze(1), zero)
        valid = (target != ignore_index) & (target >= 0) & (target < vocab)
        bad = (target != ignore_index) & ~valid
        weight_acc = weight.to(acc) if weight is not None else None
        q_vec = None  # q_c = smoothing / V * w_c over this rank's classes
        q_dot_x = torch.zeros(rows, dtype=acc, device=device)
        if label_smoothing > 0:
            local_weight = (torch.index_select(weight_acc, 0,
                                               offset + torch.arange(classes, device=device))
                            if weight_acc is not None
                            else torch.ones(classes, dtype=acc, device=device))
            q_vec = local_weight * (label_smoothing / vocab.to(acc))
            q_dot_x = torch.mv(g, q_vec)
        local_max = g.amax(1)
        shift = torch.where(local_max == -torch.inf, zero, local_max)  # a shard of -inf: sum 0
        g.sub_(shift[:, None]).exp_()
        stats = torch.stack([local_max, g.sum(1), target_logit, q_dot_x], 1)

        # 3. Every rank's statistics, merged into the same logsumexp on every rank.
        every_stats = _all_gather(stats, group)  # (world, N, 4)
        every_shift = torch.where(every_stats[..., 0] == -torch.inf, zero, every_stats[..., 0])
        global_shift = every_shift.amax(0)
        sum_exp = (every_stats[..., 1] * torch.exp(every_shift - global_shift)).sum(0)
        lse = global_shift + torch.log(sum_exp)
        x_t = every_stats[..., 2].sum(0)
        q_dot_x = every_stats[..., 3].sum(0)

        # 4. Per-row loss: hard (lse - x_t) + sum_c q_c (lse - x_c) + z lse^2, over counted rows.
        w_t = (weight_acc[target.clamp(0, weight_acc.numel() - 1)] if weight_acc is not None
               else torch.ones(rows, dtype=acc, device=device))
        w_t = torch.where(valid, w_t, zero)
        hard = (1 - label_smoothing) * w_t
        q_total = zero.expand(rows)
        if label_smoothing > 0:
            all_q = (weight_acc.sum() * (label_smoothing / vocab.to(acc)) if weight_acc is not None
                     else torch.full((), label_smoothing, dtype=acc, device=device))
            q_total = torch.where(valid, all_q, zero)
        ce_rows = torch.where(valid, (hard + q_total) * lse - hard * x_t - q_dot_x, zero)
        z_rows = torch.where(valid, z_loss * lse * lse, zero)
        nan = torch.full((), float("nan"), dtype=acc, device=device)
        ce_rows = torch.where(bad, nan, ce_rows)  # check_target=False (or compiled): NaN rows

        # Reduction and the gradient's factors ('mean': 1/W for the cross entropy, W the summed
        # weights of the counted targets, and 1/n for z, n their count).
        one = torch.ones((), dtype=acc, device=device)
        if reduction == "none":
            loss, a, a_z = ce_rows + z_rows, one, one
        elif reduction == "sum":
            loss, a, a_z = ce_rows.sum() + z_rows.sum(), one, one
        else:
            total_weight, count = w_t.sum(), valid.sum().to(acc)
            loss = ce_rows.sum() / total_weight + z_rows.sum() / count
            a, a_z = 1 / total_weight, 1 / count
        loss = loss.to(input.dtype)

        # 5. The gradient of the local logits: p_c ((hard + q_total) a + 2 z lse a_z) - q_c a
        # - hard a [c = t], with p_c = exp(x_c - lse) = g_c exp(shift - lse).
        coefficient = torch.exp(shift - lse) * ((hard + q_total) * a
                                                + torch.where(valid, 2 * z_loss * lse, zero) * a_z)
        g.mul_(torch.where(bad, nan, coefficient)[:, None])
        if q_vec is not None:
            g.addr_(torch.where(valid, a, zero).expand(rows), q_vec, alpha=-1)
        g.scatter_add_(1, safe_local[:, None], torch.where(in_shard, -hard * a, zero)[:, None])
        if slope is not None:
            g.mul_(slope)
        gradient = g.to(input.dtype)
        ctx.save_for_backward(gradient)
        ctx.reduction = reduction
        ctx.used_up = False
        return loss

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        # The saved gradient becomes input.grad with no copy: handed out as it is for a reduced
        # loss whose grad_output is a plain CPU 1 (loss.backward()), else scaled in place, which
        # uses it up (a second backward through the same graph then raises, as torch's chunked
        # F.linear_cross_entropy does): never a second gradient-sized buffer.
        if ctx.used_up:  # before the saved tensor is unpacked (torch's own version check)
            raise RuntimeError(f"{_OP}: the saved gradient was used up by an earlier backward of "
                               "this graph (scaled in place); run the forward again to call "
                               "backward twice")
        (gradient,) = ctx.saved_tensors
        none = ctx.reduction == "none"
        if not none and grad_output.device.type == "cpu" and not torch.compiler.is_compiling() \
                and float(grad_output) == 1.0:
            return (gradient,) + (None,) * 9
        ctx.used_up = True
        factor = grad_output[:, None] if none else grad_output
        return (gradient.mul_(factor.to(gradient.dtype)),) + (None,) * 9


def vocab_parallel_cross_entropy(
    input: Tensor,
    target: Tensor,
    process_group=None,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    check_target: bool = True,
) -> Tensor:
    """cross_entropy of logits sharded along the classes over the ranks of process_group (default:
    the world). input: (N, V_rank), this rank's classes; target: (N) class indices into the whole
    vocabulary, the same on every rank; weight: (V) for the whole vocabulary, the same on every
    rank. The loss (and, for 'none', every row's loss) is the same on every rank and equals
    cross_entropy of the full (N, V) logits; input.grad is this rank's shard of its gradient.
    Options as in fusedloss.functional.cross_entropy (class-index targets)."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{_OP}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if input.dim() != 2:
        raise ValueError(f"{_OP}: input must be (N, V_rank), this rank's shard of the classes; got "
                         f"shape {tuple(input.shape)}")
    if target.dim() != 1 or target.size(0) != input.size(0) or target.is_floating_point():
        raise ValueError(f"{_OP}: target must be (N) class indices for an input of shape "
                         f"{tuple(input.shape)}; got shape {tuple(target.shape)} of {target.dtype}")
    if not input.is_floating_point():
        raise TypeError(f"{_OP}: input must be floating point, got {input.dtype}")
    if target.device != input.device:
        raise ValueError(f"{_OP}: target must be on the input's device {input.device}, got "
                         f"{target.device}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{_OP}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"{_OP}: softcap must be positive (or None), got {softcap}")
    group = process_group if process_group is not None else dist.group.WORLD
    return _VocabParallelCrossEntropy.apply(input, target.long(), weight, group, ignore_index,
                                            reduction, float(label_smoothing), float(z_loss),
                                            softcap, check_target)


def sharded_on_classes(input) -> bool:
    """True for a DTensor of logits (N, C) sharded along the classes on a 1-D device mesh (what
    torch's loss_parallel takes): fusedloss's cross_entropy then runs vocab-parallel."""
    try:
        from torch.distributed.tensor import DTensor, Shard
    except ImportError:  # torch without DTensor
        return False
    return (isinstance(input, DTensor) and input.dim() == 2 and input.device_mesh.ndim == 1
            and input.placements[0] == Shard(1))


def dtensor_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing,
                          z_loss, softcap, check_target):
    """cross_entropy of a DTensor sharded on the classes: the local shard, vocab-parallel over the
    mesh's group. The target (and weight) may be DTensors too, replicated; the loss is a plain
    tensor, the same on every rank, and the gradient flows back into the DTensor's shards."""
    from torch.distributed.tensor import DTensor

    def replicated(t):
        return t.full_tensor() if isinstance(t, DTensor) else t

    return vocab_parallel_cross_entropy(
        input.to_local(), replicated(target), input.device_mesh.get_group(),
        replicated(weight) if weight is not None else None, ignore_index, reduction,
        label_smoothing, z_loss=z_loss, softcap=softcap, check_target=check_target)

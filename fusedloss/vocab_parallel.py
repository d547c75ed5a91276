"""Cross entropy of logits sharded along the classes across the ranks of a process group (the
tensor-parallel LM head of Megatron-LM and torchtitan's loss_parallel).

Each rank holds the logits of its own classes, (N, V_rank); the targets (N) are the same on every
rank and index the whole vocabulary, rank r holding the classes from the sum of the lower ranks'
V_rank on (shards may be uneven). The loss and the gradient of the local logits come from two
collectives, both all-gathers of small tensors, never of logits:

1. the shapes: (N, V_rank, a fingerprint of the targets) from every rank. They give the class
   offsets and the vocabulary, and every rank raises the same error when the ranks disagree on
   N or on the targets, or when a target is outside the vocabulary (every rank holds all the
   targets), so that no rank is left waiting in the next collective;
2. per-row statistics, (N, 4): the local maximum, the sum of exp(x - local maximum), the target's
   logit where this rank holds it (else 0) and the label-smoothing sum. Every rank merges them
   into the same logsumexp, and writes the gradient of its own logits locally.

The gradient is computed in the forward, in one buffer that becomes input.grad (backward scales
it by grad_output). The collectives are torch's functional collectives, so the function traces
under torch.compile (fullgraph); compiled, it skips the host-side checks (a bad target then gives
a NaN loss, as check_target=False does). On the CPU and CUDA the local work is two fused passes
over the shard (the ops _vocab_shard_stats and _vocab_shard_gradient); other devices run the
same formulas as ATen ops.

vocab_parallel_linear_cross_entropy does the same for a classifier sharded by rows, a chunk of
rows at a time (one small all-gather per chunk), with one all-reduce of the input's gradient.
"""

import sys
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

_OP = "fusedloss.vocab_parallel_cross_entropy"
_OP_LINEAR = "fusedloss.vocab_parallel_linear_cross_entropy"
_FUSED_ON_CPU = True  # False: the ATen path of other devices, on the CPU (for the tests)


def _all_gather(tensor: Tensor, group) -> Tensor:
    """(world, *tensor.shape): every rank's tensor, in rank order."""
    funcol = _functional_collectives()
    gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor  # torch < 2.10
    return _waited(gather(tensor.contiguous(), 0, group)).view(-1, *tensor.shape)


def _functional_collectives():
    import torch.distributed._functional_collectives as funcol  # not at import: needs c10d
    return funcol


def _waited(tensor: Tensor) -> Tensor:
    funcol = _functional_collectives()
    return funcol.wait_tensor(tensor) if hasattr(funcol, "wait_tensor") else tensor


def _logical_shift(x: Tensor, bits: int) -> Tensor:
    return (x >> bits) & ((1 << (64 - bits)) - 1)  # >> on int64 copies the sign bit


def _mixed(x: Tensor) -> Tensor:
    """SplitMix64's finalizer in wrapping int64 arithmetic: nearby keys map to unrelated values."""
    x = (x ^ _logical_shift(x, 30)) * -0x40A7B892E31B1A47  # 0xBF58476D1CE4E5B9 as a signed int64
    x = (x ^ _logical_shift(x, 27)) * -0x6B2FB644ECCEEE15  # 0x94D049BB133111EB
    return x ^ _logical_shift(x, 31)


def _shape_and_targets(rows: int, classes: int, target: Tensor) -> Tensor:
    """(rows, classes, a fingerprint of the targets): what the ranks must agree on, or learn. The
    fingerprint is a sum of hashes of (target, position): target lists that differ anywhere (a
    value, or two values swapped) give different sums but with a chance of about 2^-64."""
    position = torch.arange(target.numel(), device=target.device)
    fingerprint = _mixed(target.long() * (1 << 32) + position).sum()
    size = torch.tensor([rows, classes], dtype=torch.int64, device=target.device)
    return torch.cat([size, fingerprint.view(1)])


def _check_agreement(every: Tensor, target: Tensor, ignore_index: int, vocab: int) -> None:
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
    bad = (target != ignore_index) & ((target < 0) | (target >= vocab))
    if bool(bad.any()):
        position = int(bad.nonzero()[0, 0])
        raise IndexError(f"{_OP}: target {int(target[position])} at position {position} is out "
                         f"of bounds: the vocabulary has {vocab} classes over {len(classes)} "
                         f"ranks ({' + '.join(map(str, classes))}), ignore_index is "
                         f"{ignore_index}")


class _Problem:
    """What every rank agrees on before any logits are looked at (the first collective) and what
    follows from the targets alone: the class offset of this rank, the vocabulary, and the
    per-row terms of the loss (which rows count, their hard and smoothing weights)."""

    def __init__(self, rows: int, classes: int, target: Tensor, weight: Optional[Tensor], group,
                 ignore_index: int, label_smoothing: float, check_target: bool, acc, device):
        every = _all_gather(_shape_and_targets(rows, classes, target), group)
        self.offset = every[:dist.get_rank(group), 1].sum()
        self.vocab = every[:, 1].sum()
        if check_target and not torch.compiler.is_compiling():  # host reads: a sync on CUDA
            vocab = int(self.vocab)
            _check_agreement(every, target, ignore_index, vocab)
            if weight is not None and weight.shape != (vocab,):
                raise ValueError(f"{_OP}: weight must hold one value per class of the whole "
                                 f"vocabulary ({vocab}, the sum of the ranks' shards), got "
                                 f"shape {tuple(weight.shape)}")
        self.classes, self.acc, self.device = classes, acc, device
        self.zero = torch.zeros((), dtype=acc, device=device)
        self.weight = weight.to(acc) if weight is not None else None
        self.valid = (target != ignore_index) & (target >= 0) & (target < self.vocab)
        self.bad = (target != ignore_index) & ~self.valid
        w_t = (self.weight[target.clamp(0, self.weight.numel() - 1)] if self.weight is not None
               else torch.ones(rows, dtype=acc, device=device))
        self.w_t = torch.where(self.valid, w_t, self.zero)
        self.hard = (1 - label_smoothing) * self.w_t
        self.q_total = self.zero.expand(rows)
        self.q_vec = None  # q_c = smoothing / V * w_c over this rank's classes
        if label_smoothing > 0:
            scale = label_smoothing / self.vocab.to(acc)
            all_q = (self.weight.sum() * scale if self.weight is not None
                     else torch.full((), label_smoothing, dtype=acc, device=device))
            self.q_total = torch.where(self.valid, all_q, self.zero)
            local = (torch.index_select(self.weight, 0,
                                        self.offset + torch.arange(classes, device=device))
                     if self.weight is not None else torch.ones(classes, dtype=acc, device=device))
            self.q_vec = local * scale

    def factors(self, reduction: str):
        """The factors of the cross-entropy and z-loss terms in the loss's gradient: 1 for 'none'
        and 'sum'; for 'mean' 1/W (W the summed weights of the counted targets) and 1/n."""
        one = torch.ones((), dtype=self.acc, device=self.device)
        if reduction != "mean":
            return one, one
        return 1 / self.w_t.sum(), 1 / self.valid.sum().to(self.acc)

    def gradient_factors(self, reduction: str, dtype):
        """(a, a_z, backward_scale): the factors the forward puts into the saved gradient, and
        what backward multiplies it by (None: nothing). A float16 'mean' gradient keeps 1/W out
        (applied in backward): p_c / W would fall below float16's smallest numbers at large W."""
        a, a_z = self.factors(reduction)
        if reduction == "mean" and dtype == torch.float16:
            return torch.ones_like(a), a_z / a, a
        return a, a_z, None

    def reduce(self, ce_rows: Tensor, z_rows: Tensor, reduction: str) -> Tensor:
        if reduction == "none":
            return ce_rows + z_rows
        if reduction == "sum":
            return ce_rows.sum() + z_rows.sum()
        a, a_z = self.factors("mean")
        return ce_rows.sum() * a + z_rows.sum() * a_z  # 0/0 = NaN when no target counts, as torch


def _shard_rows(logits: Tensor, rows: slice, p: _Problem, target: Tensor, group, z_loss: float,
                softcap: Optional[float], a: Tensor, a_z: Tensor, row_scale: Optional[Tensor]):
    """The rows `rows` of the loss from `logits`, this rank's logits of those rows: their
    cross-entropy and z-loss terms (NaN for a bad target) and the gradient of the logits (times
    a, a_z, and row_scale per row when given), of the logits' dtype. One collective: every
    rank's per-row statistics. On the CPU and CUDA two fused passes (fusedloss._vocab_shard_stats
    and _vocab_shard_gradient) around it; elsewhere the same formulas in ATen ops."""
    zero = p.zero
    n = logits.size(0)
    target = target[rows]
    valid, bad, hard, q_total = p.valid[rows], p.bad[rows], p.hard[rows], p.q_total[rows]
    local_target = target - p.offset
    fused = (logits.device.type == "cuda"
             or logits.device.type == "cpu" and _FUSED_ON_CPU)
    if fused:
        stats = torch.ops.fusedloss._vocab_shard_stats(logits, local_target, p.q_vec, softcap)
    else:
        g = logits.to(p.acc, copy=True)  # becomes the gradient
        stats, shift, slope = _shard_stats_unfused(g, local_target, p, softcap)

    # Every rank's statistics, merged into the same logsumexp on every rank.
    every = _all_gather(stats, group)  # (world, n, 4)
    every_shift = torch.where(every[..., 0] == -torch.inf, zero, every[..., 0])
    global_shift = every_shift.amax(0)
    lse = global_shift + torch.log((every[..., 1] * torch.exp(every_shift - global_shift)).sum(0))
    x_t, q_dot_x = every[..., 2].sum(0), every[..., 3].sum(0)

    # hard (lse - x_t) + sum_c q_c (lse - x_c) + z lse^2 over the counted rows.
    nan = torch.full((), float("nan"), dtype=p.acc, device=logits.device)
    ce_rows = torch.where(valid, (hard + q_total) * lse - hard * x_t - q_dot_x, zero)
    ce_rows = torch.where(bad, nan, ce_rows)  # check_target=False (or compiled): NaN rows
    z_rows = torch.where(valid, z_loss * lse * lse, zero)

    # The gradient: p_c P - q_c Q - [c = t] T, p_c = exp(x_c - lse), with
    # P = (hard + q_total) a + 2 z lse a_z, Q = a and T = hard a (per row, times row_scale).
    scale = row_scale.to(p.acc) if row_scale is not None else torch.ones((), dtype=p.acc,
                                                                           device=logits.device)
    q_scale = torch.where(valid, a * scale, zero).expand(n)
    p_scale = (hard + q_total) * q_scale + torch.where(valid, 2 * z_loss * lse, zero) * a_z * scale
    p_scale = torch.where(bad, nan, p_scale)
    if fused:
        gradient = torch.ops.fusedloss._vocab_shard_gradient(
            logits, local_target, p.q_vec, softcap, lse, p_scale.contiguous(),
            q_scale.contiguous(), (hard * q_scale).contiguous())
        return ce_rows, z_rows, gradient
    g.mul_((torch.exp(shift - lse) * p_scale)[:, None])
    if p.q_vec is not None:
        g.addr_(q_scale, p.q_vec, alpha=-1)
    in_shard = (local_target >= 0) & (local_target < p.classes)
    g.scatter_add_(1, local_target.clamp(0, p.classes - 1)[:, None],
                   torch.where(in_shard, -hard * q_scale, zero)[:, None])
    if slope is not None:
        g.mul_(slope)
    return ce_rows, z_rows, g.to(logits.dtype)


def _shard_stats_unfused(g: Tensor, local_target: Tensor, p: _Problem, softcap: Optional[float]):
    """_vocab_shard_stats in ATen ops, on g (the logits in the accumulation dtype), which it
    leaves holding exp(x - shift): returns the statistics, the shift and the softcap's slope."""
    zero = p.zero
    slope = None
    if softcap is not None:
        g.div_(softcap).tanh_()
        slope = 1 - g * g  # d softcap(x) / dx
        g.mul_(softcap)
    in_shard = (local_target >= 0) & (local_target < p.classes)
    safe_local = local_target.clamp(0, p.classes - 1)
    target_logit = torch.where(in_shard, g.gather(1, safe_local[:, None]).squeeze(1), zero)
    q_dot_x = torch.mv(g, p.q_vec) if p.q_vec is not None else zero.expand(g.size(0))
    local_max = g.amax(1)
    shift = torch.where(local_max == -torch.inf, zero, local_max)  # a shard of -inf: sum 0
    g.sub_(shift[:, None]).exp_()
    return torch.stack([local_max, g.sum(1), target_logit, q_dot_x], 1), shift, slope


def _accumulation_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _saved_gradients_times(ctx, factor: Tensor, num_inputs: int):
    """The backward of both functions: their gradients were computed in the forward and saved.
    Each becomes a .grad with no copy: handed out as it is when factor (grad_output, shaped to
    the gradients) is a plain CPU 1 (loss.backward()), else scaled in place, which uses it up (a
    second backward through the same graph then raises, as torch's chunked
    F.linear_cross_entropy does): never a second gradient-sized buffer."""
    if ctx.used_up:  # before the saved tensors are unpacked (torch's own version check)
        raise RuntimeError(f"{_OP}: the saved gradient was used up by an earlier backward of "
                           "this graph (scaled in place); run the forward again to call "
                           "backward twice")
    saved = ctx.saved_tensors
    padding = (None,) * (num_inputs - len(saved))
    if ctx.backward_scale is not None:
        factor = factor * ctx.backward_scale
    if factor.dim() == 0 and factor.device.type == "cpu" and not torch.compiler.is_compiling() \
            and float(factor) == 1.0:
        return saved + padding
    ctx.used_up = True
    return tuple(None if t is None else t.mul_(factor.to(t.dtype)) for t in saved) + padding


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, target: Tensor, weight: Optional[Tensor], group,
                ignore_index: int, reduction: str, label_smoothing: float, z_loss: float,
                softcap: Optional[float], check_target: bool) -> Tensor:
        rows, classes = input.shape
        acc = _accumulation_dtype(input.dtype)
        p = _Problem(rows, classes, target, weight, group, ignore_index, label_smoothing,
                     check_target, acc, input.device)
        a, a_z, ctx.backward_scale = p.gradient_factors(reduction, input.dtype)
        ce_rows, z_rows, gradient = _shard_rows(input, slice(None), p, target, group, z_loss,
                                                softcap, a, a_z, None)
        ctx.save_for_backward(gradient)
        ctx.reduction, ctx.used_up = reduction, False
        return p.reduce(ce_rows, z_rows, reduction).to(input.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        factor = grad_output[:, None] if ctx.reduction == "none" else grad_output
        return _saved_gradients_times(ctx, factor, 10)


def _all_reduce_sum(tensor: Tensor, group) -> Tensor:
    return _waited(_functional_collectives().all_reduce(tensor, "sum", group))


def _default_chunk_rows(classes: int) -> int:
    """Rows whose logits shard takes 32 MiB in float32, at least 128 (a matmul of fewer rows
    runs far from the machine's peak)."""
    return max(128, (32 << 20) // (4 * max(classes, 1)))


def _linear_chunks(x: Tensor, w: Tensor, b: Optional[Tensor], target: Tensor, p: _Problem, group,
                   z_loss: float, softcap: Optional[float], a: Tensor, a_z: Tensor,
                   row_scale: Optional[Tensor], chunk: int, wanted):
    """The rows of x (N, H) in chunks: each chunk's logits shard x_c w^T (+ b), its loss terms,
    and its share of the gradients of x, w and b (those `wanted`), taken at once. The gradient
    of x sums every rank's share: one all-reduce at the end."""
    rows = x.size(0)
    acc = p.acc
    want_x, want_w, want_b = wanted
    param_acc = acc if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    gx = torch.zeros_like(x) if want_x else None
    gw = torch.zeros(w.shape, dtype=param_acc, device=w.device) if want_w else None
    gb = torch.zeros(w.size(0), dtype=param_acc, device=w.device) if want_b else None
    ce, z = [], []
    for start in range(0, rows, chunk):
        part = slice(start, min(rows, start + chunk))
        xc = x[part]
        logits = torch.addmm(b, xc, w.t()) if b is not None else xc @ w.t()
        scale = row_scale[part] if row_scale is not None else None
        ce_c, z_c, gd = _shard_rows(logits, part, p, target, group, z_loss, softcap, a, a_z,
                                    scale)
        del logits
        ce.append(ce_c)
        z.append(z_c)
        if want_x:
            gx[part] = gd @ w
        if want_w:
            gw += (gd.t() @ xc).to(param_acc)
        if want_b:
            gb += gd.sum(0, dtype=param_acc)
        del gd
    if want_x:
        gx = _all_reduce_sum(gx, group)
    grads = (gx, None if gw is None else gw.to(w.dtype), None if gb is None else gb.to(w.dtype))
    return torch.cat(ce), torch.cat(z), grads


class _VocabParallelLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, linear_weight: Tensor, linear_bias: Optional[Tensor],
                target: Tensor, weight: Optional[Tensor], group, ignore_index: int,
                reduction: str, label_smoothing: float, z_loss: float, softcap: Optional[float],
                chunk_size: Optional[int], check_target: bool) -> Tensor:
        x = input.reshape(-1, input.size(-1))
        t = target.reshape(-1)
        acc = _accumulation_dtype(input.dtype)
        p = _Problem(x.size(0), linear_weight.size(0), t, weight, group, ignore_index,
                     label_smoothing, check_target, acc, input.device)
        chunk = chunk_size or _default_chunk_rows(linear_weight.size(0))
        a, a_z, ctx.backward_scale = p.gradient_factors(reduction, input.dtype)
        # 'none': the gradients depend on a per-row grad_output; backward runs the chunks again.
        wanted = ctx.needs_input_grad[:3] if reduction != "none" else (False, False, False)
        ce, z, grads = _linear_chunks(x, linear_weight, linear_bias, t, p, group, z_loss, softcap,
                                      a, a_z, None, chunk, wanted)
        gx, gw, gb = grads
        if reduction == "none":
            ctx.save_for_backward(input, linear_weight, linear_bias, target, weight)
            ctx.options = (group, ignore_index, label_smoothing, z_loss, softcap, chunk)
        else:
            ctx.save_for_backward(None if gx is None else gx.view(input.shape), gw, gb)
        ctx.reduction, ctx.used_up = reduction, False
        loss = p.reduce(ce, z, reduction)
        return (loss.view(target.shape) if reduction == "none" else loss).to(input.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        if ctx.reduction != "none":
            return _saved_gradients_times(ctx, grad_output, 13)
        input, linear_weight, linear_bias, target, weight = ctx.saved_tensors
        group, ignore_index, label_smoothing, z_loss, softcap, chunk = ctx.options
        x, t = input.reshape(-1, input.size(-1)), target.reshape(-1)
        p = _Problem(x.size(0), linear_weight.size(0), t, weight, group, ignore_index,
                     label_smoothing, False, _accumulation_dtype(input.dtype), input.device)
        a, a_z = p.factors("none")
        _, _, (gx, gw, gb) = _linear_chunks(x, linear_weight, linear_bias, t, p, group, z_loss,
                                            softcap, a, a_z, grad_output.reshape(-1), chunk,
                                            ctx.needs_input_grad[:3])
        return (None if gx is None else gx.view(input.shape), gw, gb) + (None,) * 10


def vocab_parallel_linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    process_group=None,
    linear_bias: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    chunk_size: Optional[int] = None,
    check_target: bool = True,
) -> Tensor:
    """cross_entropy(input @ linear_weight.T + linear_bias, target) with the classifier sharded
    by rows over the ranks of process_group (a tensor-parallel LM head): linear_weight is this
    rank's (V_rank, H) rows, linear_bias its (V_rank); input (N, H) or (B, T, H) and target (N)
    or (B, T) are the same on every rank. Rows go chunk_size at a time (None: the rows whose
    logits shard takes 32 MiB, at least 128), so no rank holds more than one chunk of its logits
    shard; the gradients are taken chunk by chunk in the forward, the input's summed over the
    ranks by one all-reduce. One small all-gather per chunk (every rank must use the same
    chunk_size), one before the first. Options as in vocab_parallel_cross_entropy."""
    _check_options(_OP_LINEAR, input, target, weight, reduction, label_smoothing, softcap)
    if linear_weight.device != input.device or linear_weight.dtype != input.dtype or (
            linear_bias is not None and (linear_bias.device, linear_bias.dtype) !=
            (input.device, input.dtype)):
        raise ValueError(f"{_OP_LINEAR}: linear_weight and linear_bias must be of the input's "
                         f"dtype {input.dtype} on {input.device}, got {linear_weight.dtype} on "
                         f"{linear_weight.device}")
    if input.dim() not in (2, 3) or linear_weight.dim() != 2 or \
            input.size(-1) != linear_weight.size(1):
        raise ValueError(f"{_OP_LINEAR}: input must be (N, H) or (B, T, H) and linear_weight this "
                         f"rank's (V_rank, H) rows; got shapes {tuple(input.shape)} and "
                         f"{tuple(linear_weight.shape)}")
    if target.shape != input.shape[:-1] or target.is_floating_point():
        raise ValueError(f"{_OP_LINEAR}: target must be class indices of shape "
                         f"{tuple(input.shape[:-1])}; got shape {tuple(target.shape)} of "
                         f"{target.dtype}")
    if linear_bias is not None and linear_bias.shape != (linear_weight.size(0),):
        raise ValueError(f"{_OP_LINEAR}: linear_bias must be this rank's ({linear_weight.size(0)},) "
                         f"entries; got shape {tuple(linear_bias.shape)}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"{_OP_LINEAR}: chunk_size must be positive (or None), got {chunk_size}")
    group = process_group if process_group is not None else dist.group.WORLD
    return _VocabParallelLinearCrossEntropy.apply(
        input, linear_weight, linear_bias, target.long(), weight, group, ignore_index, reduction,
        float(label_smoothing), float(z_loss), softcap, chunk_size, check_target)


def _check_options(op: str, input: Tensor, target: Tensor, weight: Optional[Tensor],
                   reduction: str, label_smoothing: float, softcap: Optional[float]) -> None:
    """What every rank can check alone, before any collective (no host read of tensor data)."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if softcap is not None and not 0 < softcap < float("inf"):
        raise ValueError(f"{op}: softcap must be positive and finite (or None), got {softcap}")
    if not input.is_floating_point():
        raise TypeError(f"{op}: input must be floating point, got {input.dtype}")
    if target.device != input.device or (weight is not None and weight.device != input.device):
        raise ValueError(f"{op}: target and weight must be on the input's device {input.device}, "
                         f"got {target.device}"
                         + ("" if weight is None else f" and {weight.device}"))
    if weight is not None and weight.dim() != 1:
        raise ValueError(f"{op}: weight must be 1-D, one value per class of the vocabulary; got "
                         f"shape {tuple(weight.shape)}")


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
    Options as in fusedloss.functional.cross_entropy (class-index targets). check_target=True
    checks on the host that the ranks agree (rows, targets, weight size) and that every target
    is in the vocabulary, raising the same error on every rank (on CUDA a synchronization);
    check_target=False (and torch.compile) skips all of it: a bad target's row is then NaN."""
    _check_options(_OP, input, target, weight, reduction, label_smoothing, softcap)
    if input.dim() != 2:
        raise ValueError(f"{_OP}: input must be (N, V_rank), this rank's shard of the classes; got "
                         f"shape {tuple(input.shape)}")
    if target.dim() != 1 or target.size(0) != input.size(0) or target.is_floating_point():
        raise ValueError(f"{_OP}: target must be (N) class indices for an input of shape "
                         f"{tuple(input.shape)}; got shape {tuple(target.shape)} of {target.dtype}")
    group = process_group if process_group is not None else dist.group.WORLD
    return _VocabParallelCrossEntropy.apply(input, target.long(), weight, group, ignore_index,
                                            reduction, float(label_smoothing), float(z_loss),
                                            softcap, check_target)


def sharded_on_classes(input) -> bool:
    """True for a DTensor of logits (N, C) sharded along the classes on a 1-D device mesh (what
    torch's loss_parallel takes): fusedloss's cross_entropy then runs vocab-parallel."""
    # A DTensor exists only once its module is loaded: look it up rather than import it, which
    # (with sympy) took about a second of every process's first cross_entropy call.
    dtensor = sys.modules.get("torch.distributed.tensor")
    if dtensor is None or not hasattr(dtensor, "DTensor"):
        return False
    return (isinstance(input, dtensor.DTensor) and input.dim() == 2
            and input.device_mesh.ndim == 1 and input.placements[0] == dtensor.Shard(1))


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

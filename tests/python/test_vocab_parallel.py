"""Vocab-parallel cross entropy (torch.distributed, gloo on 127.0.0.1): logits sharded along the
classes over 2 and 4 processes (uneven shards at 4) give the loss and, put together, the gradient
of the one-process cross entropy on the full logits (float64 to 1e-12, float32 to 1e-5), over
reductions, class weights, ignored rows, label smoothing, z-loss and softcap; so does the
vocab-parallel linear cross entropy (classifier rows sharded, chunks of rows, bias, (B, T, H)
input) for the gradients of input, weight shard and bias shard; torch.compile (fullgraph) and
DTensor inputs give the same; bad input raises the same error on every rank.
One spawn per world size, every check inside it; a 60 s process-group timeout bounds any hang."""

import datetime
import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import fusedloss
from fusedloss import vocab_parallel
from fusedloss.vocab_parallel import vocab_parallel_cross_entropy
from spawn_workers import run_workers
from tolerances import assert_close_scaled

FL = fusedloss.functional
TIMEOUT_SECONDS = 60
ROWS, VOCAB = 23, 37
OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.2},
    {"z_loss": 1e-2, "reduction": "none"},
    {"softcap": 3.0},
    {"weight": True, "label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0},
    {"weight": True, "reduction": "sum", "ignore_index": 3},
]


def shards(world_size):
    """Class ranges per rank: even at 2, uneven at 4."""
    cuts = [0, 19, VOCAB] if world_size == 2 else [0, 10, 20, 30, VOCAB]
    return [(cuts[r], cuts[r + 1]) for r in range(world_size)]


def case(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(ROWS, VOCAB, generator=g, dtype=torch.float64) * 3).to(dtype)
    target = torch.randint(VOCAB, (ROWS,), generator=g)
    target[::5] = -100
    weight = torch.rand(VOCAB, generator=g, dtype=torch.float64).to(dtype) + 0.5
    return logits, target, weight


def torch_cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
                        label_smoothing=0.0, z_loss=0.0, softcap=None):
    """The oracle: torch's F.cross_entropy in float64, softcap and z-loss written out."""
    x = logits.double()
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    loss = F.cross_entropy(x, target, weight=None if weight is None else weight.double(),
                           ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    if z_loss:
        valid = target != ignore_index
        z = torch.where(valid, z_loss * torch.logsumexp(x, 1) ** 2, torch.zeros((), dtype=x.dtype))
        loss = loss + {"none": z, "sum": z.sum(), "mean": z.sum() / valid.sum()}[reduction]
    return loss


def check_close(ours, theirs, dtype, what):
    """float64 within 1e-12 (the issue's bar); other dtypes within the project's scaled
    tolerance of the float64 oracle."""
    assert ours.dtype == dtype, what
    if dtype == torch.float64:
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12, msg=lambda m: f"{what}: {m}")
    else:
        assert_close_scaled(ours, theirs, dtype, what)


def compare(rank, world_size, dtype, options, fn=vocab_parallel_cross_entropy):
    logits, target, weight = case(dtype)
    kw = dict(options)
    if kw.pop("weight", False):
        kw["weight"] = weight
    target = torch.where(target == -100, kw.get("ignore_index", -100), target)
    lo, hi = shards(world_size)[rank]
    full = logits.double().clone().requires_grad_()  # the same values, in float64
    expected = torch_cross_entropy(full, target, **kw)
    grad_out = torch.linspace(0.5, 1.5, expected.numel(), dtype=torch.float64).view(expected.shape)
    expected.backward(grad_out)
    mine = logits[:, lo:hi].clone().requires_grad_()
    got = fn(mine, target, **kw)
    got.backward(grad_out.to(dtype))
    check_close(got, expected.detach(), dtype, f"loss {options} {dtype}")
    check_close(mine.grad, full.grad[:, lo:hi], dtype, f"grad {options} {dtype}")


LINEAR_OPTIONS = [
    {"chunk_size": 5},
    {"reduction": "sum", "bias": True, "chunk_size": 7},
    {"reduction": "none", "bias": True, "chunk_size": 4, "batch": True},
    {"weight": True, "label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0, "bias": True},
]


def compare_linear(rank, world_size, dtype, options, fn=None):
    """vocab_parallel_linear_cross_entropy against the one-process cross_entropy of
    F.linear(input, full weight, full bias): loss and the gradients of input, weight shard and
    bias shard."""
    fn = fn or fusedloss.functional.vocab_parallel_linear_cross_entropy
    kw = dict(options)
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(ROWS, 6, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(VOCAB, 6, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(VOCAB, generator=g, dtype=torch.float64).to(dtype) if kw.pop("bias", False) else None
    _, target, weight = case(dtype)
    if kw.pop("weight", False):
        kw["weight"] = weight
    shape = (ROWS,)
    if kw.pop("batch", False):  # (B, T, H) input
        hidden, target, shape = hidden[:22].view(2, 11, 6), target[:22].view(2, 11), (2, 11)
    lo, hi = shards(world_size)[rank]
    full = [t.double().clone().requires_grad_() if t is not None else None for t in (hidden, w, b)]
    ref_kw = {k: v for k, v in kw.items() if k != "chunk_size"}
    expected = torch_cross_entropy(F.linear(full[0], full[1], full[2]).reshape(-1, VOCAB),
                                   target.reshape(-1), **ref_kw)
    if ref_kw.get("reduction") == "none":
        expected = expected.view(shape)
    grad_out = torch.linspace(0.5, 1.5, expected.numel(), dtype=torch.float64).view(expected.shape)
    expected.backward(grad_out)
    mine = [hidden.clone().requires_grad_(), w[lo:hi].clone().requires_grad_(),
            b[lo:hi].clone().requires_grad_() if b is not None else None]
    got = fn(mine[0], mine[1], target, linear_bias=mine[2], **kw)
    got.backward(grad_out.to(dtype))
    check_close(got, expected.detach(), dtype, f"linear loss {options} {dtype}")
    pairs = [(mine[0].grad, full[0].grad), (mine[1].grad, full[1].grad[lo:hi])]
    if b is not None:
        pairs.append((mine[2].grad, full[2].grad[lo:hi]))
    for name, (ours, theirs) in zip(("input", "weight", "bias"), pairs):
        check_close(ours, theirs, dtype, f"linear grad {name} {options} {dtype}")


def expect_error_everywhere(kind, text, call):
    try:
        call()
    except kind as e:
        assert text in str(e), str(e)
        return
    raise AssertionError(f"no {kind.__name__} ({text})")


def worker(rank, world_size, port, errors):
    try:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
        for dtype in (torch.float64, torch.float32):
            for options in OPTIONS:
                compare(rank, world_size, dtype, options)
            for options in LINEAR_OPTIONS:
                compare_linear(rank, world_size, dtype, options)
        for dtype in (torch.float16, torch.bfloat16):  # 'mean' keeps 1/W out of a float16 gradient
            for options in (OPTIONS[0], OPTIONS[-2]):
                compare(rank, world_size, dtype, options)
        # The ATen path other devices take, run on the CPU.
        vocab_parallel._FUSED_ON_CPU = False
        for options in (OPTIONS[0], OPTIONS[2], OPTIONS[-2]):
            compare(rank, world_size, torch.float64, options)
        compare_linear(rank, world_size, torch.float64, LINEAR_OPTIONS[-1])
        vocab_parallel._FUSED_ON_CPU = True
        # torch.compile, fullgraph: the same values (the host-side checks are skipped there).
        compiled = torch.compile(vocab_parallel_cross_entropy, fullgraph=True)
        compare(rank, world_size, torch.float64, {"label_smoothing": 0.1}, compiled)
        compiled_linear = torch.compile(fusedloss.functional.vocab_parallel_linear_cross_entropy,
                                        fullgraph=True)
        compare_linear(rank, world_size, torch.float64, {"chunk_size": 8, "bias": True},
                       compiled_linear)
        # DTensor logits sharded on the classes, through fusedloss.functional.cross_entropy.
        if world_size == 2:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.tensor import Shard, distribute_tensor
            mesh = init_device_mesh("cpu", (world_size,))
            logits, target, _ = case(torch.float64)
            full = logits.clone().requires_grad_()
            expected = torch_cross_entropy(full, target)
            expected.backward()
            sharded = distribute_tensor(logits, mesh, [Shard(1)]).requires_grad_()
            got = FL.cross_entropy(sharded, target)
            got.backward()
            torch.testing.assert_close(got, expected.detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(sharded.grad.full_tensor(), full.grad, rtol=1e-12, atol=1e-12)
        # Bad input: the same error on every rank, no rank left waiting.
        logits, target, weight = case(torch.float64)
        lo, hi = shards(world_size)[rank]
        mine = logits[:, lo:hi]
        bad = target.clone()
        bad[7] = VOCAB  # out of the global range: within no rank's shard
        expect_error_everywhere(IndexError, f"target {VOCAB} at position 7 is out of bounds",
                                lambda: vocab_parallel_cross_entropy(mine, bad))
        short = mine[: ROWS - 1] if rank == 0 else mine
        expect_error_everywhere(ValueError, "disagree on the number of rows",
                                lambda: vocab_parallel_cross_entropy(short, target[: short.size(0)]))
        other = target.clone()
        if rank == world_size - 1:
            other[0] = 1 if int(other[0]) != 1 else 2
        expect_error_everywhere(ValueError, "disagree on the targets",
                                lambda: vocab_parallel_cross_entropy(mine, other))
        expect_error_everywhere(ValueError, "weight must hold one value per class",
                                lambda: vocab_parallel_cross_entropy(mine, target, weight=weight[:-1]))
        hidden = torch.randn(ROWS, 6, dtype=torch.float64)
        expect_error_everywhere(IndexError, f"target {VOCAB} at position 7 is out of bounds",
                                lambda: fusedloss.functional.vocab_parallel_linear_cross_entropy(
                                    hidden, torch.randn(hi - lo, 6, dtype=torch.float64), bad))
        expect_error_everywhere(ValueError, "linear_weight this rank's (V_rank, H) rows",
                                lambda: fusedloss.functional.vocab_parallel_linear_cross_entropy(
                                    hidden, torch.randn(hi - lo, 5, dtype=torch.float64), target))
        # Backward hands the saved gradient out (grad_output 1) or scales it in place, once.
        x = mine.clone().requires_grad_()
        loss = vocab_parallel_cross_entropy(x, target)
        loss.backward(retain_graph=True)
        first = x.grad.clone()
        loss.backward(retain_graph=True)  # grad_output 1: the buffer is untouched
        torch.testing.assert_close(x.grad, 2 * first, rtol=1e-12, atol=0)
        (loss * 3).backward(retain_graph=True)  # scaled in place: used up
        expect_error_everywhere(RuntimeError, "used up by an earlier backward",
                                lambda: (loss * 3).backward())
        # check_target=False: the bad row's loss is NaN, the others are right.
        rows = vocab_parallel_cross_entropy(mine, bad, reduction="none", check_target=False)
        assert torch.isnan(rows[7]) and not torch.isnan(rows[:7]).any()
        dist.barrier()
    except Exception:  # noqa: BLE001 - reported to the parent
        errors.put(f"rank {rank}:\n{traceback.format_exc()}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 4])
def test_vocab_parallel_cross_entropy_distributed(world_size):
    run_workers(worker, world_size, 2 * TIMEOUT_SECONDS + 60)


def shard_case(dtype, smoothing, softcap, device="cpu"):
    """(logits, target, q, softcap, lse, [p_scale, q_scale, target_scale]) on `device`."""
    logits, target, q, cap, lse, rows = _shard_case(dtype, smoothing, softcap)

    def move(t):
        return None if t is None else t.to(device)
    return move(logits), move(target), move(q), cap, move(lse), [move(r) for r in rows]


def _shard_case(dtype, smoothing, softcap):
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(9, 13, generator=g, dtype=torch.float64) * 3).to(dtype)
    logits[4] = -torch.inf  # a row of -inf in this shard: its sum is 0, not NaN
    target = torch.tensor([0, 12, -1, 13, 5, 7, -100, 3, 2])  # outside [0, 13): another shard's
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    q = torch.rand(13, generator=g, dtype=torch.float64).to(acc) * 0.01 if smoothing else None
    rows = [torch.rand(9, generator=g, dtype=torch.float64).to(acc) for _ in range(3)]
    lse = torch.logsumexp(logits.to(acc), 1).nan_to_num(neginf=0.0)
    return logits, target, q, softcap, lse, rows


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing,softcap", [(False, None), (True, None), (True, 4.0)])
def test_shard_kernels_match_their_aten_formulas(dtype, smoothing, softcap, device):
    # The CPU and CUDA kernels of the vocab-parallel op against the same formulas in ATen ops.
    logits, target, q, cap, lse, (p, qs, ts) = shard_case(dtype, smoothing, softcap, device)
    acc = lse.dtype
    stats = torch.ops.fusedloss._vocab_shard_stats(logits, target, q, cap)
    x = logits.to(acc)
    if cap is not None:
        x = cap * torch.tanh(x / cap)
    m = x.amax(1)
    shift = torch.where(m == -torch.inf, torch.zeros((), dtype=acc), m)
    here = (target >= 0) & (target < 13)
    expected = torch.stack([m, torch.exp(x - shift[:, None]).sum(1),
                            torch.where(here, x.gather(1, target.clamp(0, 12)[:, None])[:, 0], 0),
                            x @ q if q is not None else torch.zeros(9, dtype=acc, device=device)], 1)
    tol = {"rtol": 1e-12, "atol": 1e-12} if acc == torch.float64 else {"rtol": 2e-6, "atol": 1e-6}
    torch.testing.assert_close(stats, expected, **tol)
    grad = torch.ops.fusedloss._vocab_shard_gradient(logits, target, q, cap, lse, p, qs, ts)
    onehot = torch.nn.functional.one_hot(target.clamp(0, 12), 13).to(acc) * here[:, None]
    g = torch.exp(x - lse[:, None]) * p[:, None] - onehot * ts[:, None]
    if q is not None:
        g = g - q[None] * qs[:, None]
    if cap is not None:
        g = g * (1 - torch.tanh(logits.to(acc) / cap) ** 2)
    assert grad.dtype == dtype
    torch.testing.assert_close(grad, g.to(dtype), **(tol if dtype != torch.bfloat16 else {}))


@pytest.mark.parametrize("smoothing,softcap", [(False, None), (True, 4.0)])
def test_shard_kernels_opcheck(smoothing, softcap, device):
    logits, target, q, cap, lse, (p, qs, ts) = shard_case(torch.float32, smoothing, softcap, device)
    torch.library.opcheck(torch.ops.fusedloss._vocab_shard_stats, (logits, target, q, cap))
    torch.library.opcheck(torch.ops.fusedloss._vocab_shard_gradient,
                          (logits, target, q, cap, lse, p, qs, ts))


def test_shard_kernels_bad_arguments():
    logits, target, q, cap, lse, (p, qs, ts) = shard_case(torch.float32, True, None)
    with pytest.raises(ValueError, match="target must be \\(N\\) int64"):
        torch.ops.fusedloss._vocab_shard_stats(logits, target[:4], q, cap)
    with pytest.raises(ValueError, match="smoothing must be \\(V_rank\\) of Float"):
        torch.ops.fusedloss._vocab_shard_stats(logits, target, q.double(), cap)
    with pytest.raises(ValueError, match="lse must be \\(N\\)"):
        torch.ops.fusedloss._vocab_shard_gradient(logits, target, q, cap, lse[:3], p, qs, ts)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_shard_kernels_do_not_wait_for_the_gpu():
    logits, target, q, cap, lse, (p, qs, ts) = shard_case(torch.float32, True, 4.0, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.ops.fusedloss._vocab_shard_stats(logits, target, q, cap)
        torch.ops.fusedloss._vocab_shard_gradient(logits, target, q, cap, lse, p, qs, ts)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_target_fingerprint_tells_apart_swaps_and_small_changes():
    # What the ranks compare to agree on the targets: an order-sensitive hash, not a checksum that
    # two swapped targets (or changes that cancel out) leave unchanged.
    torch.manual_seed(0)
    target = torch.randint(0, 50000, (4096,))
    target[1009] = target[0] + 1
    swapped = target.clone()
    swapped[0], swapped[1009] = target[1009], target[0]
    cancelling = target.clone()
    cancelling[5] += 1
    cancelling[6] -= 1
    prints = {int(vocab_parallel._shape_and_targets(4096, 10, t)[2]) for t in (target, swapped, cancelling)}
    assert len(prints) == 3
    assert int(vocab_parallel._shape_and_targets(4096, 10, target.clone())[2]) in prints  # deterministic


def test_plain_cross_entropy_does_not_load_dtensor():
    # cross_entropy looks for DTensor logits without importing torch.distributed.tensor (with
    # sympy, about a second of a fresh process's first call); a DTensor exists only once that
    # module is loaded, which the DTensor cases above cover.
    import subprocess
    import sys
    code = ("import sys, torch, fusedloss\n"
            "loaded = 'torch.distributed.tensor' in sys.modules\n"
            "fusedloss.functional.cross_entropy(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))\n"
            "print(loaded, 'torch.distributed.tensor' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]

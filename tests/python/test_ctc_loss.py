"""ctc_loss against torch.nn.functional.ctc_loss (float64 on the same values): every argument form
(padded and concatenated targets, lengths as tensors and lists, unbatched), reductions, blank,
zero_infinity, dtypes; edge lattices (empty target, no time steps, repeated labels that force
blanks, impossible alignments); a hypothesis family over random lengths and labels; gradcheck,
opcheck, torch.compile, TorchScript, bitwise determinism over thread counts and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import fusedloss
from deferred import raises
from tolerances import DTYPES, assert_bitwise_deterministic, assert_close, assert_close_lattice

FL = fusedloss.functional
REDUCTIONS = ["none", "mean", "sum"]


def problem(T=30, N=4, C=7, S=9, blank=0, seed=0, repeats=True):
    """log_probs (T, N, C) of a log_softmax, padded targets without blank (padding: blank), and
    lengths: one full-length sample, one short input, one empty target, the rest random; with
    `repeats`, sample 0 repeats a label (a blank must separate them)."""
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(T, N, C, generator=g, dtype=torch.float64).log_softmax(2)
    labels = [c for c in range(C) if c != blank]
    targets = torch.tensor(labels)[torch.randint(len(labels), (N, S), generator=g)]
    input_lengths = torch.randint(S * 2 + 1, T + 1, (N,), generator=g)
    target_lengths = torch.randint(1, S + 1, (N,), generator=g)
    input_lengths[0], target_lengths[0] = T, S
    if N > 1:
        input_lengths[1] = S + 3
    if N > 2:
        target_lengths[2] = 0
    if repeats:
        targets[0, 1] = targets[0, 0]
    for n in range(N):  # padding is never read: make it something a reader would notice
        targets[n, target_lengths[n]:] = blank
    return log_probs, targets, input_lengths, target_lengths


def concatenated(targets, target_lengths):
    return torch.cat([targets[n, :target_lengths[n]] for n in range(len(target_lengths))])


def compare(log_probs, targets, input_lengths, target_lengths, dtype, device, **options):
    """Our loss and gradient in `dtype` against torch's in float64 on the same (rounded) values."""
    x = log_probs.to(dtype)
    ours_x = x.to(device).clone().requires_grad_()
    ref_x = x.double().clone().requires_grad_()
    to_device = (lambda v: v.to(device)) if isinstance(targets, torch.Tensor) else (lambda v: v)
    ours = FL.ctc_loss(ours_x, to_device(targets), input_lengths, target_lengths, **options)
    expected = F.ctc_loss(ref_x, targets, input_lengths, target_lengths, **options)
    assert ours.dtype == dtype and ours.shape == expected.shape
    assert_close(ours.double().cpu(), expected.detach().to(dtype).double(), dtype)
    grad_output = torch.rand_like(expected) + 0.5
    ours.backward(grad_output.to(dtype).to(device))
    expected.backward(grad_output.to(dtype).double())
    per_sample = F.ctc_loss(ref_x.detach(), targets, input_lengths, target_lengths, reduction="none",
                            blank=options.get("blank", 0), zero_infinity=True)
    magnitude = per_sample.abs().max().item() if per_sample.numel() else 0.0
    assert_close_lattice(ours_x.grad.double().cpu(), ref_x.grad.to(dtype).double(), dtype, magnitude)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("form", ["padded", "concatenated", "lists", "unbatched"])
def test_ctc_matches_torch(form, reduction, dtype, device):
    log_probs, targets, il, tl = problem()
    if form == "concatenated":
        targets = concatenated(targets, tl)
    elif form == "lists":
        il, tl = il.tolist(), tl.tolist()
    elif form == "unbatched":
        log_probs, targets, il, tl = log_probs[:, 0], targets[0], il[0], tl[0]
    compare(log_probs, targets, il, tl, dtype, device, reduction=reduction)


@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ctc_impossible_alignments(reduction, zero_infinity, device):
    # Sample 0: a repeated label needs a blank between (3 frames for 2 labels: fits; 2 do not);
    # 1: target longer than the input; 2: no time steps, empty target (loss 0); 3: no time steps,
    # a label (impossible). torch: inf loss and NaN gradient, or 0 and 0 with zero_infinity.
    log_probs = torch.randn(6, 4, 5, dtype=torch.float64).log_softmax(2)
    targets = torch.tensor([[2, 2, 0], [1, 2, 3], [1, 1, 1], [4, 0, 0]])
    il = torch.tensor([2, 2, 0, 0])
    tl = torch.tensor([2, 3, 0, 1])
    compare(log_probs, targets, il, tl, torch.float64, device, reduction=reduction,
            zero_infinity=zero_infinity)
    il[0] = 3  # now feasible
    compare(log_probs, targets, il, tl, torch.float64, device, reduction=reduction,
            zero_infinity=zero_infinity)


@pytest.mark.parametrize("blank", [0, 3, 6])
def test_ctc_blank_anywhere(blank, device):
    log_probs, targets, il, tl = problem(blank=blank, seed=blank)
    compare(log_probs, targets, il, tl, torch.float32, device, blank=blank, reduction="sum")


def test_ctc_strided_inputs(device):
    # Batch-first outputs transposed to (T, N, C), and a column slice of wider padded targets.
    log_probs, targets, il, tl = problem(N=5)
    batch_first = log_probs.transpose(0, 1).contiguous()
    wide = torch.cat([targets, torch.zeros_like(targets)], 1)[:, :targets.size(1)]
    compare(batch_first.transpose(0, 1), wide, il, tl, torch.float32, device)
    every_other_class = torch.randn(30, 5, 14, dtype=torch.float64)[..., ::2].log_softmax(2)
    compare(every_other_class, targets, il, tl, torch.float64, device, reduction="none")


def test_ctc_long_sequences(device):
    # More states than a CUDA block has threads (2S + 1 = 601 > 256) and classes than threads.
    log_probs, targets, il, tl = problem(T=700, N=3, C=400, S=300, seed=4)
    compare(log_probs, targets, il, tl, torch.float32, device, reduction="mean")


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_ctc_random_lattices(data):
    T = data.draw(st.integers(1, 12), label="T")
    N = data.draw(st.integers(1, 4), label="N")
    C = data.draw(st.integers(2, 5), label="C")
    blank = data.draw(st.integers(0, C - 1), label="blank")
    labels = [c for c in range(C) if c != blank]
    lengths = [data.draw(st.tuples(st.integers(0, T), st.integers(0, T)), label=f"lengths {n}")
               for n in range(N)]
    il = torch.tensor([a for a, _ in lengths])
    tl = torch.tensor([b for _, b in lengths])
    S = max(1, int(tl.max()))
    targets = torch.tensor([[data.draw(st.sampled_from(labels)) for _ in range(S)] for _ in range(N)])
    zero_infinity = data.draw(st.booleans(), label="zero_infinity")
    reduction = data.draw(st.sampled_from(REDUCTIONS), label="reduction")
    log_probs = (torch.randn(T, N, C, dtype=torch.float64) * 2).log_softmax(2)
    if data.draw(st.booleans(), label="concatenated"):
        targets = concatenated(targets, tl)
    compare(log_probs, targets, il, tl, torch.float64, "cpu", blank=blank, reduction=reduction,
            zero_infinity=zero_infinity)


def test_ctc_gradcheck():
    # torch's gradient is that of the logits of a log_softmax (its exp(lp) term vanishes there),
    # so gradcheck goes through log_softmax, as torch's own CTC tests do.
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 1, 2], [3, 4, 0], [2, 0, 0]])
    il, tl = torch.tensor([8, 6, 3]), torch.tensor([3, 2, 1])
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda v: FL.ctc_loss(v.log_softmax(2), targets, il, tl, reduction=reduction), (x,))
        assert torch.autograd.gradcheck(
            lambda v: FL.ctc_loss(v.log_softmax(2), targets, il, tl, reduction=reduction,
                                  zero_infinity=True), (x,))


def test_ctc_module_script_and_cpp_overload(device, tmp_path):
    log_probs, targets, il, tl = problem()
    x, targets = log_probs.float().to(device), targets.to(device)
    ours = fusedloss.nn.CTCLoss(blank=0, reduction="sum", zero_infinity=True)
    reference = torch.nn.CTCLoss(blank=0, reduction="sum", zero_infinity=True)
    assert isinstance(ours, torch.nn.CTCLoss)
    expected = reference(x.cpu(), targets.cpu(), il, tl)
    assert_close(ours(x, targets, il, tl).cpu(), expected)
    scripted = torch.jit.script(ours)
    scripted.save(str(tmp_path / "ctc.pt"))
    assert_close(torch.jit.load(str(tmp_path / "ctc.pt"))(x, targets, il, tl).cpu(), expected)
    # The int-list overload, as torch.ctc_loss has.
    assert_close(torch.ops.fusedloss.ctc_loss(x, targets, il.tolist(), tl.tolist(), 0, "sum", True).cpu(),
                 expected)
    swapped = fusedloss.nn.replace_losses(torch.nn.Sequential(torch.nn.CTCLoss()))
    assert type(swapped[0]) is fusedloss.nn.CTCLoss


def test_ctc_bitwise_deterministic_across_threads():
    log_probs, targets, il, tl = problem(T=60, N=8, C=20, S=12)
    assert_bitwise_deterministic(lambda v: FL.ctc_loss(v, targets, il, tl), log_probs.float())
    assert_bitwise_deterministic(lambda v: FL.ctc_loss(v, targets, il, tl, reduction="none").sum(),
                                 log_probs)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_ctc_opcheck_and_compile(requires_grad, device):
    log_probs, targets, il, tl = problem(T=12, N=3, C=5, S=3)
    x = log_probs.float().to(device).requires_grad_(requires_grad)
    targets = targets.to(device)
    for reduction in REDUCTIONS:
        torch.library.opcheck(torch.ops.fusedloss._ctc_loss_forward,
                              (x.detach(), targets, il, tl, 0, reduction, False, True))
        torch.library.opcheck(torch.ops.fusedloss.ctc_loss.default,
                              (x, targets, il, tl, 0, reduction, False))
    torch.library.opcheck(torch.ops.fusedloss.ctc_loss.default,
                          (x, concatenated(targets, tl), il, tl), {"zero_infinity": True})
    if requires_grad:
        torch._dynamo.reset()
        compiled = torch.compile(lambda v: FL.ctc_loss(v, targets, il, tl), fullgraph=True,
                                 backend="aot_eager")
        out = compiled(x)
        out.backward()
        xr = x.detach().cpu().clone().requires_grad_()
        expected = F.ctc_loss(xr, targets.cpu(), il, tl)
        expected.backward()
        assert_close(out.cpu(), expected)
        assert_close(x.grad.cpu(), xr.grad)


def test_ctc_no_gradient_paths(device):
    log_probs, targets, il, tl = problem()
    x = log_probs.to(device)
    expected = F.ctc_loss(log_probs, targets, il, tl, reduction="none")
    with torch.no_grad():
        assert_close(FL.ctc_loss(x.requires_grad_(), targets.to(device), il, tl,
                                 reduction="none").cpu(), expected)
    assert_close(FL.ctc_loss(x.detach(), targets.to(device), il, tl, reduction="none").cpu(),
                 expected)


def test_ctc_bad_input(device):
    log_probs, targets, il, tl = problem(T=10, N=3, C=5, S=3)
    x = log_probs.float().to(device)
    t = targets.to(device)
    bad = t.clone()
    bad[1, 0] = 5
    with raises(IndexError, match=r"target label 5 is out of bounds: expected a class in \[0, 5\); "
                                  r"found at position 3 of targets \(sample 1\)"):
        FL.ctc_loss(x, bad, il, tl)
    bad[1, 0] = 0
    with raises(ValueError, match=r"target label 0 at position 3 of targets \(sample 1\) is the blank"):
        FL.ctc_loss(x, bad, il, tl)
    bad[1, 0] = -1
    with raises(IndexError, match="target label -1 is out of bounds"):
        FL.ctc_loss(x, bad, il, tl)
    with raises(RuntimeError, match=r"Expected input_lengths to have value at most 10, but got value 11 \(sample 2\)"):
        FL.ctc_loss(x, t, [10, 10, 11], tl)
    with raises(RuntimeError, match=r"Expected input_lengths to have value at least 0, but got value -1 \(sample 0\)"):
        FL.ctc_loss(x, t, [-1, 10, 10], tl)
    with raises(RuntimeError, match=r"Expected target_lengths to have value at least 0, but got value -2"):
        FL.ctc_loss(x, t, il, [1, -2, 1])
    with raises(RuntimeError, match=r"Expected tensor to have size at least 4 at dimension 1, but got size 3"):
        FL.ctc_loss(x, t, il, [1, 4, 1])
    with raises(RuntimeError, match=r"Expected tensor to have size 4 at dimension 0, but got size 5"):
        FL.ctc_loss(x, torch.tensor([1, 2, 3, 4, 1], device=device), il, [1, 2, 1])
    with pytest.raises(RuntimeError, match=r"input_lengths must be of size batch_size \(3\), got shape \[2\]"):
        FL.ctc_loss(x, t, il[:2], tl)
    with pytest.raises(RuntimeError, match=r"blank must be in label range \[0, 5\), got 5"):
        FL.ctc_loss(x, t, il, tl, blank=5)
    with pytest.raises(RuntimeError, match="targets must hold integer class indices, got Float"):
        FL.ctc_loss(x, t.float(), il, tl)
    with pytest.raises(RuntimeError, match="input_lengths must be integral, got Float"):
        FL.ctc_loss(x, t, il.float(), tl)
    with pytest.raises(RuntimeError, match="log_probs tensor must not be empty"):
        FL.ctc_loss(x[:, :0], t[:0], il[:0], tl[:0])
    with pytest.raises(RuntimeError, match=r"log_probs must be \(T, N, C\), or \(T, C\) unbatched, got shape \[10\]"):
        FL.ctc_loss(x[:, 0, 0], t, il, tl)
    with pytest.raises(RuntimeError, match=r"Expected tensor to have size 3 at dimension 0, but got size 2"):
        FL.ctc_loss(x, t[:2], il, tl)
    with pytest.raises(NotImplementedError, match="log_probs must be float32"):
        FL.ctc_loss(x.int(), t, il, tl)
    with pytest.raises(ValueError, match="reduction"):
        FL.ctc_loss(x, t, il, tl, reduction="batchmean")
    with pytest.raises(RuntimeError, match="double backward"):
        v = x.clone().requires_grad_()
        torch.autograd.grad(FL.ctc_loss(v, t, il, tl), v, create_graph=True)
    # The checks read only each sample's labels: padding may hold anything.
    padded = t.clone()
    padded[2, tl[2]:] = 99
    assert torch.isfinite(FL.ctc_loss(x, padded, il, tl))
    assert math.isfinite(FL.ctc_loss(x, padded, il, tl, reduction="sum").item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ctc_cuda_lengths_on_the_device_checked_there():
    log_probs, targets, il, tl = problem(T=10, N=3, C=5, S=3)
    x, t = log_probs.float().cuda(), targets.cuda()
    compare(log_probs.float(), targets, il, tl, torch.float32, "cuda")
    with raises(RuntimeError, match=r"Expected input_lengths to have value at most 10, but got value 12 \(sample 1\)"):
        FL.ctc_loss(x, t, torch.tensor([10, 12, 10], device="cuda"), tl.cuda())
    with raises(RuntimeError, match="Expected target_lengths to have value at least 0"):
        FL.ctc_loss(x, t, il.cuda(), torch.tensor([1, -1, 1], device="cuda"))
    flat = concatenated(targets, tl).cuda()
    with raises(RuntimeError, match="Expected tensor to have size"):
        FL.ctc_loss(x, flat, il.cuda(), (tl + 1).cuda())
    assert_close(FL.ctc_loss(x, flat, il.cuda(), tl.cuda()).cpu(), F.ctc_loss(x.cpu(), targets, il, tl))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ctc_cuda_bitwise_repeatable():
    # A block per sample, fixed-order sums, no atomics on floats: the same bits every run.
    log_probs, targets, il, tl = problem(T=200, N=6, C=300, S=60, seed=9)
    x = log_probs.float().cuda()
    results = []
    for _ in range(3):
        v = x.clone().requires_grad_()
        loss = FL.ctc_loss(v, targets.cuda(), il, tl)
        loss.backward()
        results.append((loss, v.grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_ctc_masked_classes(device):
    # A log-probability of -inf (a masked class): the same loss as torch, a gradient of 0 there
    # (torch's is NaN there: exp(-inf - -inf)); the rest as torch's.
    log_probs, targets, il, tl = problem(T=20, N=3, C=6, S=4, seed=3)
    masked = log_probs.clone()
    masked[:, :, 5] = -math.inf
    targets = targets.clamp(max=4)  # no target uses the masked class
    x = masked.to(device).clone().requires_grad_()
    loss = FL.ctc_loss(x, targets.to(device), il, tl, reduction="sum")
    ref_x = masked.detach().clone().requires_grad_()
    expected = F.ctc_loss(ref_x, targets, il, tl, reduction="sum")
    expected.backward()
    loss.backward()
    assert_close(loss.cpu(), expected.detach())
    assert torch.isnan(ref_x.grad[:, :, 5]).any() and x.grad[..., 5].eq(0).all()
    assert_close(x.grad[..., :5].cpu(), ref_x.grad[..., :5])

"""CUDA without host synchronization: bad values become deferred errors (raised by the next
fusedloss call once the work is done, or by fusedloss.check_errors(), or at once in synchronous
mode), no loss synchronizes, a loss call is at most two kernel launches forward and one backward,
and every loss can be captured in a CUDA graph and replayed."""

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from conftest import CUDA_SKIP_REASON
from tolerances import assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_SKIP_REASON)
FL = fusedloss.functional


@pytest.fixture(autouse=True)
def clean_error_state():
    torch.cuda.synchronize()
    fusedloss.check_errors()  # nothing may be left over from another test
    yield
    torch.cuda.synchronize()
    fusedloss.check_errors()


def bad_target_case():
    x = torch.randn(8, 5, device="cuda", requires_grad=True)
    t = torch.tensor([0, 1, 2, 9, 4, -7, 1, 2], device="cuda")  # bad at positions 3 and 5
    return x, t


def test_bad_target_is_deferred_not_raised_and_its_row_is_nan():
    x, t = bad_target_case()
    loss = FL.cross_entropy(x, t, reduction="none")  # no error here, no synchronization
    loss.sum().backward()
    torch.cuda.synchronize()
    assert torch.isnan(loss[3]) and torch.isnan(loss[5])
    assert torch.isfinite(loss[[0, 1, 2, 4, 6, 7]]).all()
    assert torch.isnan(x.grad[3]).all() and torch.isfinite(x.grad[0]).all()
    with pytest.raises(IndexError, match=r"cross_entropy: target 9 is out of bounds.*\[0, 5\).*position 3"):
        fusedloss.check_errors()
    fusedloss.check_errors()  # reported once


def test_deferred_error_is_raised_by_the_next_call_once_the_work_is_done():
    x, t = bad_target_case()
    FL.cross_entropy(x, t)
    torch.cuda.synchronize()  # the work is done: the next fusedloss call reports it
    with pytest.raises(IndexError, match="target 9 is out of bounds.*position 3"):
        FL.mse_loss(x, torch.zeros_like(x))


def test_each_bad_call_is_reported_once_in_order():
    x, t = bad_target_case()
    FL.cross_entropy(x, t)
    torch.cuda.synchronize()
    with pytest.raises(IndexError, match=r"fusedloss.cross_entropy: target 9"):
        # raises the earlier call's error before recording its own
        FL.nll_loss(x, torch.tensor([0, 0, 0, 0, 0, 0, 0, 11], device="cuda"))
    FL.nll_loss(x, torch.tensor([0, 0, 0, 0, 0, 0, 0, 11], device="cuda"))
    with pytest.raises(IndexError, match=r"fusedloss.nll_loss: target 11 .*position 7"):
        fusedloss.check_errors()


def test_synchronous_mode_raises_at_the_call():
    x, t = bad_target_case()
    previous = fusedloss.set_synchronous_errors(True)
    try:
        with pytest.raises(IndexError, match="target 9 is out of bounds.*position 3"):
            FL.cross_entropy(x, t)
    finally:
        fusedloss.set_synchronous_errors(previous)


@pytest.mark.parametrize("case", ["bce", "hinge", "multi_margin", "nll", "linear"])
def test_every_checked_value_is_deferred(case):
    x = torch.randn(6, 4, device="cuda")
    if case == "bce":
        call = lambda: FL.binary_cross_entropy(torch.full((3,), 1.5, device="cuda"),  # noqa: E731
                                               torch.ones(3, device="cuda"))
        expected = (RuntimeError, "between 0 and 1; 3 of 3.*position 0: 1.5")
    elif case == "hinge":
        call = lambda: FL.hinge_loss(x[0], torch.tensor([1.0, 0.5, -1.0, 1.0], device="cuda"))  # noqa: E731
        expected = (ValueError, "labels -1 and 1; 1 of 4.*position 1: 0.5")
    elif case == "multi_margin":
        call = lambda: FL.multi_margin_loss(x, torch.tensor([0, 1, 2, 3, 4, 0], device="cuda"))  # noqa: E731
        expected = (RuntimeError, r"target 4 is out of range.*\[0, 4\).*position 4")
    elif case == "nll":
        call = lambda: FL.nll_loss(x, torch.tensor([0, 1, 2, 3, 4, 0], device="cuda"))  # noqa: E731
        expected = (IndexError, "nll_loss: target 4 is out of bounds.*position 4")
    else:
        w = torch.randn(4, 4, device="cuda")
        call = lambda: FL.linear_cross_entropy(x, w, torch.tensor([0, 1, 2, 3, 4, 0], device="cuda"))  # noqa: E731
        expected = (IndexError, "linear_cross_entropy: target 4 is out of bounds.*position 4")
    call()
    with pytest.raises(expected[0], match=expected[1]):
        fusedloss.check_errors()


CASES = ["cross_entropy_mean", "cross_entropy_weighted_smoothed", "cross_entropy_none",
         "cross_entropy_bf16", "mse_mean", "bce_mean", "bce_with_logits_half", "hinge_sum",
         "multi_margin", "nll_mean", "nll_none_bf16", "cosine_embedding", "triplet_margin_swap",
         "multilabel_margin", "jsd_ignored_rows", "ctc_mean", "ctc_none_concatenated"]


def loss_cases():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(64, 1000, device="cuda", generator=g)
    t = torch.randint(1000, (64,), device="cuda", generator=g)
    t[::5] = -100
    w = torch.rand(1000, device="cuda", generator=g) + 0.5
    y = torch.randn(64, 1000, device="cuda", generator=g)
    p = torch.rand(64, 1000, device="cuda", generator=g)
    labels = torch.where(p > 0.5, 1.0, -1.0)
    # CTC on the device end to end (lengths too: lengths on the host are copied each call, which
    # a captured graph would not repeat): x as (T=16, N=4, C=1000).
    ctc_targets = torch.randint(1, 1000, (4, 5), device="cuda", generator=g)
    ctc_input_lengths = torch.tensor([16, 12, 16, 9], device="cuda")
    ctc_target_lengths = torch.tensor([5, 3, 0, 4], device="cuda")
    ctc_flat = torch.cat([ctc_targets[0, :5], ctc_targets[1, :3], ctc_targets[3, :4]])
    return {
        "cross_entropy_mean": (lambda v: FL.cross_entropy(v, t), x),
        "cross_entropy_weighted_smoothed": (
            lambda v: FL.cross_entropy(v, t, weight=w, label_smoothing=0.1, z_loss=1e-3), x),
        "cross_entropy_none": (lambda v: FL.cross_entropy(v, t, reduction="none").sum(), x),
        "cross_entropy_bf16": (lambda v: FL.cross_entropy(v, t), x.bfloat16()),
        "mse_mean": (lambda v: FL.mse_loss(v, y), x),
        "bce_mean": (lambda v: FL.binary_cross_entropy(torch.sigmoid(v), p), x),
        "bce_with_logits_half": (lambda v: FL.binary_cross_entropy_with_logits(v, p.half()), x.half()),
        "hinge_sum": (lambda v: FL.hinge_loss(v, labels, reduction="sum"), x),
        "multi_margin": (lambda v: FL.multi_margin_loss(v, t.clamp_min(0)), x),
        "nll_mean": (lambda v: FL.nll_loss(v, t, weight=w), x),
        "nll_none_bf16": (lambda v: FL.nll_loss(v, t, reduction="none").sum(), x.bfloat16()),
        "cosine_embedding": (lambda v: FL.cosine_embedding_loss(v, y, (t > 500).float() * 2 - 1), x),
        "triplet_margin_swap": (lambda v: FL.triplet_margin_loss(v, y, p, swap=True), x),
        "jsd_ignored_rows": (lambda v: FL.jensen_shannon_divergence(v, y, t, beta=0.3, temperature=2.0), x),
        "ctc_mean": (lambda v: FL.ctc_loss(v.view(16, 4, 1000).log_softmax(2), ctc_targets,
                                            ctc_input_lengths, ctc_target_lengths), x),
        "ctc_none_concatenated": (lambda v: FL.ctc_loss(
            v.view(16, 4, 1000).log_softmax(2), ctc_flat, ctc_input_lengths, ctc_target_lengths,
            reduction="none", zero_infinity=True).sum(), x),
        "multilabel_margin": (lambda v: FL.multilabel_margin_loss(
            v[:, :100], torch.where(t[:, None] >= 0, t[:, None] % 100, -1).expand(64, 100).contiguous()), x),
    }


@pytest.mark.parametrize("name", CASES)
def test_no_host_synchronization(name):
    fn, x = loss_cases()[name]
    v = x.clone().requires_grad_()
    fn(v).backward()  # warm-up: one-time setup (the error record) happens outside the check
    v.grad = None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn(v).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def kernel_count(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.name.startswith("Memcpy") and not e.name.startswith("Memset"))


# 'mean' with class indices: the denominators first (one block reading the targets), so that the
# gradient holds them; the rows; the finishing sum. Backward: one kernel (which, for a factor of 1,
# touches no memory).
@pytest.mark.parametrize("reduction,forward_launches", [("none", 1), ("mean", 3), ("sum", 2)])
def test_cross_entropy_launches(reduction, forward_launches):
    x = torch.randn(32, 3000, device="cuda", requires_grad=True)
    t = torch.randint(3000, (32,), device="cuda")
    t[0] = -100
    loss = FL.cross_entropy(x, t, reduction=reduction)  # warm-up
    holder = {}

    def forward():
        holder["loss"] = FL.cross_entropy(x, t, reduction=reduction)

    assert kernel_count(forward) == forward_launches
    grad_output = torch.full_like(holder["loss"], 2.0)
    assert kernel_count(lambda: holder["loss"].backward(grad_output)) == 1
    x.grad = None
    loss = FL.cross_entropy(x, t, reduction=reduction)
    loss.backward(grad_output)
    assert_close(x.grad, F.cross_entropy(x.detach(), t, reduction=reduction).new_tensor(0) +
                 torch.autograd.grad(F.cross_entropy(x, t, reduction=reduction), x, grad_output)[0],
                 torch.float32)


# nll_loss: the rows (target check included), then for 'mean'/'sum' the finishing sum; backward
# writes the whole gradient in one kernel, reading a broadcast grad_output without copying it.
@pytest.mark.parametrize("reduction,forward_launches", [("none", 1), ("mean", 2), ("sum", 2)])
def test_nll_loss_launches(reduction, forward_launches):
    x = torch.randn(32, 3000, 2, device="cuda", requires_grad=True)
    t = torch.randint(3000, (32, 2), device="cuda")
    t[0] = -100
    w = torch.rand(3000, device="cuda")
    FL.nll_loss(x, t, weight=w, reduction=reduction)  # warm-up
    holder = {}

    def forward():
        loss = FL.nll_loss(x, t, weight=w, reduction=reduction)
        holder["loss"] = loss.sum() if reduction == "none" else loss

    assert kernel_count(forward) == forward_launches + (reduction == "none")  # + .sum()
    grad_output = torch.tensor(2.0, device="cuda")  # made outside the count: no fill kernel
    assert kernel_count(lambda: holder["loss"].backward(grad_output)) == 1
    expected = 2 * torch.autograd.grad(F.nll_loss(x, t, weight=w, reduction=reduction).sum(), x)[0]
    assert_close(x.grad, expected, torch.float32)


@pytest.mark.parametrize("name", CASES)
def test_capture_in_a_cuda_graph_and_replay(name):
    fn, x = loss_cases()[name]
    static_x = x.clone().requires_grad_()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as CUDA graphs want
        for _ in range(2):
            static_x.grad = None
            fn(static_x).backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    static_x.grad = None
    with torch.cuda.graph(graph):
        static_loss = fn(static_x)
        static_loss.backward()
    for seed in (1, 2):
        fresh = torch.randn(x.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        with torch.no_grad():
            static_x.copy_(fresh.to(x.dtype))
        graph.replay()
        eager_x = static_x.detach().clone().requires_grad_()
        eager_loss = fn(eager_x)
        eager_loss.backward()
        torch.cuda.synchronize()
        assert_close(static_loss.detach(), eager_loss.detach(), x.dtype)
        assert torch.equal(static_x.grad, eager_x.grad)  # the same kernels: bitwise the same


def test_bad_value_in_a_replayed_graph_is_reported_by_check_errors():
    x = torch.randn(8, 5, device="cuda")
    t = torch.zeros(8, dtype=torch.long, device="cuda")
    FL.cross_entropy(x, t)  # warm-up (sets up the error record outside the capture)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = FL.cross_entropy(x, t)
    t[6] = 5
    graph.replay()
    torch.cuda.synchronize()
    assert torch.isnan(loss)
    with pytest.raises(IndexError, match="target 5 is out of bounds.*position 6"):
        fusedloss.check_errors()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("classes", [10, 64, 100, 2048, 3000, 32000, 70000])
def test_cross_entropy_row_kernels_against_torch(classes, dtype):
    # Every group width (8 threads, warp, 1024-thread block), vector and scalar loads (odd C),
    # rows kept in shared memory (32000) or read twice (70000 float32).
    torch.manual_seed(classes)
    x = (torch.randn(37, classes, device="cuda") * 3).to(dtype).requires_grad_()
    t = torch.randint(classes, (37,), device="cuda")
    t[::7] = -100
    w = torch.rand(classes, device="cuda", dtype=dtype) + 0.5
    for kw in ({}, {"weight": w, "label_smoothing": 0.05}):
        x.grad = None
        loss = FL.cross_entropy(x, t, **kw)
        loss.backward()
        x64 = x.detach().double().requires_grad_()
        ref = F.cross_entropy(x64, t, **{k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()})
        ref.backward()
        assert_close(loss.double(), ref, dtype)
        assert_close(x.grad.double(), x64.grad, dtype)

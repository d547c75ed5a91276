"""Embedding losses over triplets of rows (triplet_margin_loss, triplet_margin_with_distance_loss)
against torch.nn.functional: values and gradients over shapes, broadcasting, norms, swap, dtypes
and reductions; gradcheck, opcheck, torch.compile, TorchScript and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from tolerances import DTYPES, assert_close, assert_close_scaled

FL = fusedloss.functional
REDUCTIONS = ["none", "mean", "sum"]
NORMS = [2.0, 1.0, 3.0, 0.5, math.inf, -math.inf, 0.0]

# (anchor, positive, negative) shapes: rows, one row of three (1-D), a broadcast positive, three
# dimensions, 0-d, empty, zero-length rows, long rows.
TRIPLET_CASES = [
    ((6, 5), (6, 5), (6, 5)), ((5,), (5,), (5,)), ((6, 5), (1, 5), (6, 5)),
    ((2, 3, 4), (2, 3, 4), (2, 1, 4)), ((), (), ()), ((0, 4), (0, 4), (0, 4)),
    ((3, 0), (3, 0), (3, 0)), ((3, 700), (3, 700), (3, 700)),
]


def triplet_inputs(shapes, dtype, device, seed=0):
    """The three inputs in `dtype` on `device` (leaves that take a gradient) and their float64
    copies for the oracle. The negative is near the anchor in some rows, far in others, so the
    hinge is both active and not."""
    g = torch.Generator().manual_seed(seed)
    values = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    values[2] = values[2] * 1.5 + 0.2
    ours = [v.to(dtype).to(device).requires_grad_() for v in values]
    reference = [v.detach().double().requires_grad_() for v in ours]
    return ours, reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", TRIPLET_CASES, ids=str)
def test_triplet_matches_torch(shapes, reduction, dtype, device):
    full_shape = torch.broadcast_shapes(*shapes)
    for p in NORMS:
        if math.isinf(p) and full_shape[-1:] == (0,):
            continue  # torch refuses: an empty max (test_triplet_module_script_and_errors)
        for swap in (False, True):
            ours_in, ref_in = triplet_inputs(shapes, dtype, device)
            margin = 0.75  # exact in every dtype: p = 0's distances are counts that cancel
            ours = FL.triplet_margin_loss(*ours_in, margin=margin, p=p, swap=swap, reduction=reduction)
            expected = F.triplet_margin_loss(*ref_in, margin=margin, p=p, swap=swap, reduction=reduction)
            what = f"p={p} swap={swap}"
            assert ours.dtype == dtype and ours.shape == expected.shape, what
            assert_close(ours.double(), expected.detach().to(dtype).double(), dtype, msg=what)
            grad_output = torch.rand_like(expected) + 0.5
            ours.backward(grad_output.to(dtype))
            expected.backward(grad_output.to(dtype).double())
            for name, a, b in zip(("anchor", "positive", "negative"), ours_in, ref_in):
                # p = 0 counts nonzeros: torch's graph gives no gradient, ours a zero one.
                b_grad = b.grad if b.grad is not None else torch.zeros_like(b)
                assert a.grad.shape == a.shape, f"{what} {name}"
                if a.shape == full_shape:
                    assert_close(a.grad.double(), b_grad.to(dtype).double(), dtype, msg=f"{what} grad {name}")
                else:  # a broadcast input's gradient sums rows rounded to the dtype
                    assert_close_scaled(a.grad, b_grad, dtype, f"{what} grad {name}")


def test_triplet_swap_tie_shares_gradient():
    # d(a, n) == d(p, n): torch's minimum sends half the gradient to each distance.
    a = torch.tensor([[0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([[0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    n = torch.tensor([[0.25, 1.0]], dtype=torch.float64, requires_grad=True)
    ours = FL.triplet_margin_loss(a, p, n, swap=True, eps=0.0)
    ours.backward()
    ref = [t.detach().clone().requires_grad_() for t in (a, p, n)]
    F.triplet_margin_loss(*ref, swap=True, eps=0.0).backward()
    for x, r in zip((a, p, n), ref):
        assert_close(x.grad, r.grad)


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("swap", [False, True])
def test_triplet_gradcheck(p, swap):
    g = torch.Generator().manual_seed(3)
    a, q, n = (torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda x, y, z: FL.triplet_margin_loss(x, y, z, margin=2.0, p=p, swap=swap, reduction=reduction),
            (a, q, n))


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (False, False, True)])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_triplet_0d_inputs_with_some_gradients(needs, reduction):
    # 0-d triplets where only some inputs take a gradient: backward scales each saved gradient
    # as the shape of the inputs says (the others' are empty placeholders).
    values = (0.3, 0.5, -0.2)
    ours = [torch.tensor(v, dtype=torch.float64, requires_grad=r) for v, r in zip(values, needs)]
    theirs = [torch.tensor(v, dtype=torch.float64, requires_grad=r) for v, r in zip(values, needs)]
    FL.triplet_margin_loss(*ours, reduction=reduction).backward(torch.tensor(0.7, dtype=torch.float64))
    F.triplet_margin_loss(*theirs, reduction=reduction).backward(torch.tensor(0.7, dtype=torch.float64))
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert_close(a.grad, b.grad)


def test_triplet_module_script_and_errors():
    g = torch.Generator().manual_seed(4)
    a, q, n = (torch.randn(5, 3, generator=g) for _ in range(3))
    ours = fusedloss.nn.TripletMarginLoss(margin=0.5, p=1.0, swap=True, reduction="sum")
    reference = torch.nn.TripletMarginLoss(margin=0.5, p=1.0, swap=True, reduction="sum")
    assert isinstance(ours, torch.nn.TripletMarginLoss)
    assert_close(ours(a, q, n), reference(a, q, n))
    assert_close(torch.jit.script(ours)(a, q, n), reference(a, q, n))
    # Integer inputs compute in the default dtype, as torch (which adds a float eps).
    ints = [(t * 3).long() for t in (a, q, n)]
    assert_close(FL.triplet_margin_loss(*ints, reduction="none"), F.triplet_margin_loss(*ints, reduction="none"))
    with pytest.raises(ValueError, match="margin must be greater than 0, got 0"):
        FL.triplet_margin_loss(a, q, n, margin=0.0)
    with pytest.raises(RuntimeError, match="anchor 2D, positive 1D, and negative 2D inputs"):
        FL.triplet_margin_loss(a, q[0], n)
    with pytest.raises(RuntimeError, match=r"anchor and positive of shapes \[5, 3\] and \[4, 3\] are not broadcastable"):
        FL.triplet_margin_loss(a, q[:4], n)
    with pytest.raises(ValueError, match="batchmean"):
        FL.triplet_margin_loss(a, q, n, reduction="batchmean")
    with pytest.raises(RuntimeError, match="double backward"):
        x = a.clone().requires_grad_()
        torch.autograd.grad(FL.triplet_margin_loss(x, q, n), x, create_graph=True)
    with pytest.raises(RuntimeError, match="cannot compute the inf norm.*empty"):
        FL.triplet_margin_loss(a[:, :0], q[:, :0], n[:, :0], p=math.inf)
    anchor = a.clone().requires_grad_()  # only the anchor takes a gradient: only its is kept
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        FL.triplet_margin_loss(anchor, q, n)
    assert sum(t.numel() for t in saved) == a.numel() + 1  # its gradient and a 0-d scale
    nan = a.clone()
    nan[1, 2] = math.nan
    assert torch.isnan(FL.triplet_margin_loss(nan, q, n, reduction="none")[1])


@pytest.mark.parametrize("requires_grad", [False, True])
def test_triplet_opcheck_and_compile(requires_grad, device):
    a = torch.randn(5, 4, device=device, requires_grad=requires_grad)
    q, n = torch.randn(5, 4, device=device), torch.randn(1, 4, device=device)
    for reduction in REDUCTIONS:
        torch.library.opcheck(torch.ops.fusedloss._triplet_margin_loss_forward,
                              (a.detach(), q, n, 1.0, 3.0, 1e-6, False, reduction, [True, False, True]))
    if requires_grad:
        torch._dynamo.reset()
        compiled = torch.compile(lambda x: FL.triplet_margin_loss(x, q, n, swap=True), fullgraph=True,
                                 backend="aot_eager")
        out = compiled(a)
        out.backward()
        ar = a.detach().clone().requires_grad_()
        expected = F.triplet_margin_loss(ar, q, n, swap=True)
        expected.backward()
        assert_close(out, expected)
        assert_close(a.grad, ar.grad)


def cosine_distance(x, y):
    return 1.0 - F.cosine_similarity(x, y)


@pytest.mark.parametrize("distance", [None, torch.pairwise_distance, torch.nn.PairwiseDistance(p=1.0, eps=1e-3),
                                      cosine_distance], ids=["default", "pairwise", "module_p1", "callable"])
@pytest.mark.parametrize("swap", [False, True])
def test_triplet_with_distance_matches_torch(distance, swap, device):
    ours_in, ref_in = triplet_inputs(((6, 5), (6, 5), (6, 5)), torch.float32, device, seed=5)
    for reduction in REDUCTIONS:
        ours = FL.triplet_margin_with_distance_loss(*ours_in, distance_function=distance, margin=0.7, swap=swap,
                                                    reduction=reduction)
        expected = F.triplet_margin_with_distance_loss(*ref_in, distance_function=distance, margin=0.7,
                                                       swap=swap, reduction=reduction)
        assert_close(ours.double(), expected.detach(), torch.float32)
        ours.sum().backward()
        expected.sum().backward()
    for a, b in zip(ours_in, ref_in):
        assert_close(a.grad.double(), b.grad, torch.float32)


def test_triplet_with_distance_fuses_pairwise_distance_only():
    a, q, n = (torch.randn(4, 3) for _ in range(3))
    calls = []

    def counting(x, y):
        calls.append(1)
        return torch.pairwise_distance(x, y)

    module = fusedloss.nn.TripletMarginWithDistanceLoss(distance_function=counting, swap=True)
    assert isinstance(module, torch.nn.TripletMarginWithDistanceLoss)
    assert_close(module(a, q, n), torch.nn.TripletMarginWithDistanceLoss(swap=True)(a, q, n))
    assert len(calls) == 3  # a Python distance is called, as torch calls it
    default = fusedloss.nn.TripletMarginWithDistanceLoss()
    assert FL._fused_distance(default.distance_function) == (2.0, 1e-6)
    assert FL._fused_distance(torch.nn.PairwiseDistance(keepdim=True)) is None
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        FL.triplet_margin_with_distance_loss(a, q, n, margin=-1.0)
    with pytest.raises(RuntimeError, match="anchor 2D, positive 1D"):
        FL.triplet_margin_with_distance_loss(a, q[0], n)


OPS = {
    "triplet_margin_loss": lambda d: ((torch.randn(4, 5, device=d), torch.randn(4, 5, device=d),
                                       torch.randn(1, 5, device=d), 1.0, 2.0, 1e-6, True, "mean"), {}),
    "triplet_margin_loss_p3": lambda d: ((torch.randn(4, 5, device=d), torch.randn(4, 5, device=d),
                                          torch.randn(4, 5, device=d), 0.5, 3.0, 1e-6, False, "none"), {}),
}


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(name, requires_grad, device):
    args, kwargs = OPS[name](device)
    args = (args[0].requires_grad_(requires_grad),) + args[1:]
    torch.library.opcheck(getattr(torch.ops.fusedloss, name.replace("_p3", "")), args, kwargs)

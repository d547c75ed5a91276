"""multilabel_margin_loss against torch.nn.functional: values and gradients over label patterns
(none, all, repeats, entries after the end), shapes (0-d, 1-D, rows, empty, long rows), dtypes
and reductions; gradcheck, opcheck, torch.compile, TorchScript and bad targets."""

import math

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from deferred import raises
from tolerances import DTYPES, assert_close

FL = fusedloss.functional
REDUCTIONS = ["none", "mean", "sum"]


def label_rows(rows, classes, generator):
    """Targets of every kind: a few labels then -1 and leftovers, no labels, every class a label
    (no -1), a repeated label."""
    target = torch.randint(classes, (rows, classes), generator=generator)
    for r in range(rows):
        kind = r % 4
        if kind == 0:
            target[r, min(2, classes - 1)] = -1
        elif kind == 1:
            target[r, 0] = -1
        elif kind == 2:
            target[r] = torch.randperm(classes, generator=generator)
        elif classes > 2:
            target[r, :3] = torch.tensor([1, 1, -1])
    return target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(8, 5), (5,), (), (4, 1), (3, 700)], ids=str)
def test_multilabel_margin_matches_torch(shape, reduction, dtype, device):
    g = torch.Generator().manual_seed(11)
    classes = shape[-1] if shape else 1
    rows = shape[0] if len(shape) == 2 else 1
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.7).to(dtype)
    target = label_rows(rows, classes, g).reshape(shape)
    ours_x = x.to(device).clone().requires_grad_()
    ref_x = x.double().to(device).clone().requires_grad_()
    ours = FL.multilabel_margin_loss(ours_x, target.to(device), reduction=reduction)
    expected = F.multilabel_margin_loss(ref_x, target.to(device), reduction=reduction)
    assert ours.dtype == dtype and ours.shape == expected.shape
    assert_close(ours.double(), expected.detach().to(dtype).double(), dtype)
    grad_output = torch.rand_like(expected) + 0.5
    ours.backward(grad_output.to(dtype))
    expected.backward(grad_output.to(dtype).double())
    assert_close(ours_x.grad.double(), ref_x.grad.to(dtype).double(), dtype)


def test_multilabel_margin_empty_batch(device):
    x = torch.randn(0, 4, device=device, requires_grad=True)
    t = torch.zeros(0, 4, dtype=torch.long, device=device)
    assert FL.multilabel_margin_loss(x, t, reduction="none").shape == (0,)
    assert FL.multilabel_margin_loss(x, t, reduction="sum").item() == 0
    # torch's 'mean' of no rows reads uninitialized memory; ours is NaN, as torch's other means.
    loss = FL.multilabel_margin_loss(x, t)
    assert math.isnan(loss.item())
    loss.backward()
    assert x.grad.shape == (0, 4)


def test_multilabel_margin_gradcheck():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = label_rows(6, 5, g)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(lambda v: FL.multilabel_margin_loss(v, target, reduction=reduction), (x,))


def test_multilabel_margin_module_script_and_errors(device):
    x = torch.randn(3, 4, device=device)
    t = torch.tensor([[3, 0, -1, 1], [1, 2, 3, -1], [-1, 1, 1, 1]], device=device)
    ours, reference = fusedloss.nn.MultiLabelMarginLoss(reduction="sum"), torch.nn.MultiLabelMarginLoss(reduction="sum")
    assert isinstance(ours, torch.nn.MultiLabelMarginLoss)
    assert_close(ours(x, t), reference(x, t))
    assert_close(torch.jit.script(ours)(x, t), reference(x, t))
    nan = x.clone()
    nan[0, 2] = math.nan  # torch's kernel skips a NaN score; ours makes the row NaN
    assert torch.isnan(FL.multilabel_margin_loss(nan, t, reduction="none")[0])
    with raises(RuntimeError, match=r"target 4 is out of range: expected a class in \[0, 4\) or -1.*position 6"):
        FL.multilabel_margin_loss(x, torch.tensor([[3, 0, -1, 1], [1, 2, 4, -1], [-1, 1, 1, 1]], device=device))
    with raises(RuntimeError, match=r"target -2 is out of range.*position 0"):
        FL.multilabel_margin_loss(x, torch.full((3, 4), -2, device=device))
    with pytest.raises(RuntimeError, match="target must hold int64 class indices, got Int"):
        FL.multilabel_margin_loss(x, t.int())
    with pytest.raises(RuntimeError, match=r"inconsistent target size: \[2, 4\] for input of size: \[3, 4\]"):
        FL.multilabel_margin_loss(x, t[:2])
    with pytest.raises(RuntimeError, match=r"Expected non-empty vector or matrix.*\[3, 0\]"):
        FL.multilabel_margin_loss(x[:, :0], t[:, :0])
    with pytest.raises(RuntimeError, match=r"Expected non-empty vector or matrix.*\[1, 3, 4\]"):
        FL.multilabel_margin_loss(x[None], t[None])
    with pytest.raises(NotImplementedError, match="input must be float32"):
        FL.multilabel_margin_loss(t, t)
    with pytest.raises(RuntimeError, match="double backward"):
        v = x.clone().requires_grad_()
        torch.autograd.grad(FL.multilabel_margin_loss(v, t), v, create_graph=True)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_multilabel_margin_internal_opcheck_and_compile(requires_grad, device):
    x = torch.randn(5, 4, device=device, requires_grad=requires_grad)
    t = label_rows(5, 4, torch.Generator().manual_seed(13)).to(device)
    for reduction in REDUCTIONS:
        torch.library.opcheck(torch.ops.fusedloss._multilabel_margin_loss_forward,
                              (x.detach(), t, reduction, True))
    if requires_grad:
        torch._dynamo.reset()
        compiled = torch.compile(lambda v: FL.multilabel_margin_loss(v, t), fullgraph=True, backend="aot_eager")
        out = compiled(x)
        out.backward()
        xr = x.detach().clone().requires_grad_()
        expected = F.multilabel_margin_loss(xr, t)
        expected.backward()
        assert_close(out, expected)
        assert_close(x.grad, xr.grad)


OPS = {
    "multilabel_margin_loss": lambda d: ((torch.randn(4, 5, device=d),
                                          torch.tensor([[0, 4, -1, 2, 2], [1, 1, 3, -1, 0],
                                                        [-1, 0, 0, 0, 0], [4, 3, 2, 1, 0]], device=d),
                                          "mean"), {}),
    "multilabel_margin_loss_none_1d": lambda d: ((torch.randn(5, device=d), torch.tensor([3, -1, 0, 0, 0], device=d),
                                                  "none"), {}),
}


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(name, requires_grad, device):
    args, kwargs = OPS[name](device)
    args = (args[0].requires_grad_(requires_grad),) + args[1:]
    torch.library.opcheck(torch.ops.fusedloss.multilabel_margin_loss, args, kwargs)

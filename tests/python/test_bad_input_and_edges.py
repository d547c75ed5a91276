"""The bad-input matrix (every op against each kind of wrong argument: torch's exception type and
a message naming the argument) and the edge cases of layout and value that must equal torch."""

import math

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from tolerances import assert_close

FL = fusedloss.functional

# op -> the arguments that follow (input, target) with their defaults, reduction last.
OPS = {
    "mse_loss": lambda r: (r,),
    "l1_loss": lambda r: (r,),
    "huber_loss": lambda r: (r, 1.0),
    "smooth_l1_loss": lambda r: (r, 1.0),
    "binary_cross_entropy": lambda r: (None, r),
    "binary_cross_entropy_with_logits": lambda r: (None, None, r),
    "sigmoid_focal_loss": lambda r: (0.25, 2.0, r),
    "soft_margin_loss": lambda r: (r,),
    "hinge_embedding_loss": lambda r: (1.0, r),
    "hinge_loss": lambda r: (1.0, False, r),
    "poisson_nll_loss": lambda r: (True, False, 1e-8, r),
    "kl_div": lambda r: (r, False),
    "margin_ranking_loss": lambda r: (torch.ones(1, 1), 0.0, r),  # (input1, input2, labels)
    "multilabel_soft_margin_loss": lambda r: (None, r),
    "gaussian_nll_loss": lambda r: (torch.ones(4, 3), False, 1e-6, r),  # var
}
WEIGHTED = {"binary_cross_entropy": 2, "binary_cross_entropy_with_logits": 2}


def call(op, input, target, reduction="mean"):
    return getattr(torch.ops.fusedloss, op)(input, target, *OPS[op](reduction))


def good_pair(op):
    x = torch.rand(4, 3)
    t = torch.ones(4, 3) if op in ("hinge_loss", "soft_margin_loss", "hinge_embedding_loss") else torch.rand(4, 3)
    return x, t


@pytest.mark.parametrize("op", OPS)
def test_every_op_accepts_its_good_pair(op):
    x, t = good_pair(op)
    assert call(op, x, t).shape == ()  # the matrix below tests what differs from this


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
@pytest.mark.parametrize("op", OPS)
def test_non_floating_inputs_are_not_implemented(op, dtype):
    x, t = good_pair(op)
    with pytest.raises(NotImplementedError, match=rf"fusedloss\.{op}: input and target must promote to float32"):
        call(op, x.to(dtype), t.to(dtype))


@pytest.mark.parametrize("op", OPS)
def test_unknown_reduction(op):
    x, t = good_pair(op)
    with pytest.raises(ValueError, match=rf"fusedloss\.{op}: reduction must be 'none', 'mean' or 'sum', got 'avg'"):
        call(op, x, t, "avg")


@pytest.mark.parametrize("op", OPS)
def test_tensors_on_different_devices(op):
    x, t = good_pair(op)
    with pytest.raises(RuntimeError, match=rf"fusedloss\.{op}: input and target must be on the same device, got input on meta and target on cpu"):
        call(op, x.to("meta"), t)


@pytest.mark.parametrize("op", OPS)
def test_shapes_that_do_not_fit(op):
    x, _ = good_pair(op)
    if op in WEIGHTED:
        with pytest.raises(ValueError, match=rf"fusedloss\.{op}: target of shape \[4, 2\] must have the same shape as input of shape \[4, 3\]"):
            call(op, x, torch.rand(4, 2))
    else:
        with pytest.raises(RuntimeError, match=rf"fusedloss\.{op}: input and target of shapes \[4, 3\] and \[4, 2\] are not broadcastable"):
            call(op, x, torch.ones(4, 2))


@pytest.mark.parametrize("op, which", [("binary_cross_entropy", "weight"),
                                       ("binary_cross_entropy_with_logits", "weight"),
                                       ("binary_cross_entropy_with_logits", "pos_weight")])
def test_bad_weights(op, which):
    x, t = good_pair(op)

    def with_weight(w):
        args = list(OPS[op]("mean"))
        args[0 if which == "weight" else 1] = w
        return getattr(torch.ops.fusedloss, op)(x, t, *args)

    with pytest.raises(RuntimeError, match=rf"{which} of shapes \[2\] and \[4, 3\] are not broadcastable"):
        with_weight(torch.rand(2))
    with pytest.raises(RuntimeError, match=rf"{which} of shape \[5, 4, 3\] does not broadcast to the input shape \[4, 3\]"):
        with_weight(torch.rand(5, 4, 3))
    with pytest.raises(RuntimeError, match=rf"{which} must be a floating-point tensor, got Long"):
        with_weight(torch.ones(3, dtype=torch.long))
    with pytest.raises(RuntimeError, match=rf"{which} must be on the device of input \(cpu\), got meta"):
        with_weight(torch.ones(3, device="meta"))


@pytest.mark.parametrize(
    "fn, kwargs, error, match",
    [
        (FL.huber_loss, {"delta": math.nan}, RuntimeError, "delta must be positive, got nan"),
        (FL.huber_loss, {"delta": -1.0}, RuntimeError, "delta must be positive, got -1"),
        (FL.smooth_l1_loss, {"beta": math.nan}, RuntimeError, "beta must be non-negative, got nan"),
        (FL.hinge_loss, {"margin": math.nan}, ValueError, "hinge_loss: margin is NaN"),
        (FL.hinge_embedding_loss, {"margin": math.nan}, ValueError, "hinge_embedding_loss: margin is NaN"),
        (FL.sigmoid_focal_loss, {"gamma": math.nan}, ValueError, "gamma must be >= 0, got nan"),
        (FL.sigmoid_focal_loss, {"alpha": math.nan}, ValueError, "alpha must be in \\[0, 1\\]"),
    ],
)
def test_bad_hyper_parameters(fn, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn(torch.rand(3), torch.ones(3), **kwargs)


# ---- edge cases equal to torch ----

def test_channels_last_inputs():
    base = torch.randn(2, 3, 4, 5)
    x = base.to(memory_format=torch.channels_last).requires_grad_()
    xr = base.clone().requires_grad_()
    t = torch.rand(2, 3, 4, 5).to(memory_format=torch.channels_last)
    for ours, theirs in [(FL.mse_loss, F.mse_loss), (FL.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits)]:
        x.grad = xr.grad = None
        a, b = ours(x, t, reduction="none"), theirs(xr, t, reduction="none")
        assert_close(a, b)
        a.sum().backward()
        b.sum().backward()
        assert_close(x.grad, xr.grad)


def test_expanded_input_that_requires_grad_accumulates_its_gradient():
    t = torch.randn(4, 5)
    grads = []
    for fn in (FL.huber_loss, F.huber_loss):
        base = torch.linspace(-1, 1, 5).reshape(1, 5).requires_grad_()
        fn(base.expand(4, 5), t, reduction="sum").backward()  # an overlapping (stride 0) view
        grads.append(base.grad)
    assert_close(*grads)


@pytest.mark.parametrize("fn, ref", [(FL.mse_loss, F.mse_loss), (FL.l1_loss, F.l1_loss), (FL.smooth_l1_loss, F.smooth_l1_loss)])
def test_denormal_inputs(fn, ref):
    x = torch.tensor([1e-40, -3e-39, 1e-45, 0.0, 1e-38])
    t = torch.tensor([0.0, 1e-40, -1e-45, 1e-44, 2e-38])
    for reduction in ("none", "sum"):
        xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        a, b = fn(xs, t, reduction=reduction), ref(xr, t, reduction=reduction)
        assert torch.equal(a, b)
        a.sum().backward()
        b.sum().backward()
        assert torch.equal(xs.grad, xr.grad)


def test_nan_and_inf_logits_propagate_like_torch():
    x = torch.tensor([math.nan, math.inf, -math.inf, 1.0], dtype=torch.float64)
    t = torch.tensor([1.0, 0.0, 1.0, 0.5], dtype=torch.float64)
    for fn, ref in [(FL.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits),
                    (FL.soft_margin_loss, F.soft_margin_loss)]:
        a = fn(x, t, reduction="none")
        b = ref(x, t, reduction="none")
        assert torch.equal(a.isnan(), b.isnan()), (fn, a, b)
        assert_close(a, b)  # NaN where torch has NaN, inf where torch has inf


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_empty_inputs_with_weights(reduction):
    x, t = torch.rand(0, 3), torch.rand(0, 3)
    for args in [{"weight": torch.rand(3)}, {"pos_weight": torch.rand(3)}]:
        assert_close(FL.binary_cross_entropy_with_logits(x, t, reduction=reduction, **args),
                     F.binary_cross_entropy_with_logits(x, t, reduction=reduction, **args))

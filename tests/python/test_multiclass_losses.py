"""Multi-class losses (cross_entropy, nll_loss, multi_margin_loss) against torch.nn.functional, and
cross entropy's z_loss and softcap against their formulas in plain torch ops: values and
gradients over shapes, strides, dtypes, reductions and options; gradcheck, opcheck,
torch.compile, TorchScript, determinism and bad targets."""

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from deferred import raises
from tolerances import DTYPES, assert_bitwise_deterministic, assert_close

FL = fusedloss.functional
REDUCTIONS = ["none", "mean", "sum"]
# (input shape, class dimension): (C), (N, C), (N, C, d1), (N, C, d1, d2)
SHAPES = [(7,), (5, 7), (3, 4, 5), (2, 3, 4, 5), (6, 1), (4, 2), (3, 1500)]


def make_case(shape, dtype, device, seed=0, ignore_every=3, probabilities=False):
    """Logits of `dtype`, their float64 copy for the oracle, and targets."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    classes = shape[0] if len(shape) == 1 else shape[1]
    if probabilities:
        target = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64), dim=-1 if len(shape) == 1 else 1)
    else:
        target_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
        target = torch.randint(classes, target_shape, generator=g)
        if ignore_every and target.dim() > 0:
            target.view(-1)[::ignore_every] = -100
    x = x.to(dtype)
    return x.to(device), x.double().to(device), target.to(device), classes


def class_weight(classes, dtype, device):
    return (torch.arange(classes, dtype=torch.float64) % 5 * 0.4 + 0.3).to(dtype).to(device)


def check_against(ours_fn, ref_fn, x, x64, dtype, inputs_for_grad=None):
    """Value and input gradient of ours on x against the oracle on x's float64 copy."""
    xg = x.clone().requires_grad_()
    rg = x64.clone().requires_grad_()
    ours, ref = ours_fn(xg), ref_fn(rg)
    assert ours.dtype == dtype and ours.shape == ref.shape
    assert_close(ours.double(), ref, dtype)
    if ref.numel() and ref.requires_grad:
        grad = torch.linspace(0.5, 1.5, ref.numel(), dtype=torch.float64).view(ref.shape).to(ref.device)
        ours.backward(grad.to(dtype))
        ref.backward(grad)
        assert_close(xg.grad.double(), rg.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", [{}, {"weight": True}, {"label_smoothing": 0.2},
                                     {"weight": True, "label_smoothing": 0.35}],
                         ids=["plain", "weight", "smoothing", "weight+smoothing"])
def test_cross_entropy_class_indices_match_torch(shape, reduction, dtype, options, device):
    x, x64, target, classes = make_case(shape, dtype, device)
    kw = dict(options)
    if kw.pop("weight", False):
        w = class_weight(classes, dtype, device)
        kw_ours, kw_ref = dict(kw, weight=w), dict(kw, weight=w.double())
    else:
        kw_ours = kw_ref = kw
    check_against(lambda v: FL.cross_entropy(v, target, reduction=reduction, **kw_ours),
                  lambda v: F.cross_entropy(v, target, reduction=reduction, **kw_ref),
                  x, x64, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7,), (5, 7), (3, 4, 5), (2, 300)])
@pytest.mark.parametrize("options", [{}, {"weight": True}, {"label_smoothing": 0.3},
                                     {"weight": True, "label_smoothing": 0.1}],
                         ids=["plain", "weight", "smoothing", "weight+smoothing"])
def test_cross_entropy_probability_targets_match_torch(shape, reduction, dtype, options, device):
    x, x64, target, classes = make_case(shape, dtype, device, probabilities=True)
    kw = dict(options)
    w = class_weight(classes, dtype, device) if kw.pop("weight", False) else None
    tg_ours = target.to(dtype).clone().requires_grad_()
    tg_ref = tg_ours.detach().double().clone().requires_grad_()
    xg, rg = x.clone().requires_grad_(), x64.clone().requires_grad_()
    ours = FL.cross_entropy(xg, tg_ours, weight=w, reduction=reduction, **kw)
    ref = F.cross_entropy(rg, tg_ref, weight=None if w is None else w.double(),
                          reduction=reduction, **kw)
    assert ours.dtype == dtype
    assert_close(ours.double(), ref, dtype)
    ours.sum().backward()
    ref.sum().backward()
    assert_close(xg.grad.double(), rg.grad, dtype)
    assert_close(tg_ours.grad.double(), tg_ref.grad, dtype)


def test_probability_target_dtype_promotes_like_torch():
    x = torch.randn(4, 5)
    y = torch.softmax(torch.randn(4, 5, dtype=torch.float64), 1)
    ours, ref = FL.cross_entropy(x, y), F.cross_entropy(x, y)
    assert ours.dtype == ref.dtype == torch.float64
    assert_close(ours, ref, torch.float32)  # torch takes log_softmax in float32 first


@pytest.mark.parametrize("classes", [2, 33, 1024, 1025, 70000])
def test_cross_entropy_row_widths(classes, device):
    """Row lengths on both sides of the CUDA warp/block switch and past a block's reach."""
    x, x64, target, _ = make_case((6, classes), torch.float32, device, seed=classes)
    check_against(lambda v: FL.cross_entropy(v, target, label_smoothing=0.1),
                  lambda v: F.cross_entropy(v, target, label_smoothing=0.1), x, x64, torch.float32)


def test_cross_entropy_non_contiguous_and_channels_last(device):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(7, 5, generator=g, dtype=torch.float64).to(device)
    target = torch.tensor([0, 1, 2, 3, 4], device=device)
    check_against(lambda v: FL.cross_entropy(v.t(), target), lambda v: F.cross_entropy(v.t(), target),
                  base.float(), base, torch.float32)
    img = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64).to(device)
    cl = img.float().contiguous(memory_format=torch.channels_last)
    tgt = torch.randint(4, (2, 3, 5), generator=g).to(device)
    check_against(lambda v: FL.cross_entropy(v, tgt, reduction="none"),
                  lambda v: F.cross_entropy(v, tgt, reduction="none"), cl, img, torch.float32)


def test_uint8_targets_like_torch(device):
    x, x64, target, _ = make_case((6, 5), torch.float32, device, ignore_every=0)
    assert_close(FL.cross_entropy(x, target.to(torch.uint8)), F.cross_entropy(x, target.to(torch.uint8)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_every_target_ignored_behaves_as_torch(reduction, label_smoothing, dtype, device):
    x = torch.randn(4, 5, device=device, dtype=dtype, requires_grad=True)
    xr = x.detach().double().requires_grad_()
    target = torch.full((4,), -100, device=device)
    ours = FL.cross_entropy(x, target, reduction=reduction, label_smoothing=label_smoothing)
    ref = F.cross_entropy(xr, target, reduction=reduction, label_smoothing=label_smoothing)
    assert_close(ours.double(), ref, dtype)  # NaN for 'mean' (0 / 0), as torch
    ours.sum().backward()
    ref.sum().backward()
    assert_close(x.grad.double(), xr.grad, dtype)  # 0, also where 1/n is applied in backward


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch_behaves_as_torch(reduction, device):
    x = torch.randn(0, 5, device=device, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long, device=device)
    ours = FL.cross_entropy(x, target, reduction=reduction)
    assert_close(ours, F.cross_entropy(x.detach(), target, reduction=reduction))
    ours.sum().backward()
    assert x.grad.shape == (0, 5)


def test_custom_ignore_index(device):
    x, x64, target, _ = make_case((8, 6), torch.float64, device, ignore_every=0)
    target[::2] = 3
    check_against(lambda v: FL.cross_entropy(v, target, ignore_index=3, label_smoothing=0.1),
                  lambda v: F.cross_entropy(v, target, ignore_index=3, label_smoothing=0.1),
                  x, x64, torch.float64)


def z_softcap_reference(x, target, weight=None, ignore_index=-100, reduction="mean",
                        label_smoothing=0.0, z_loss=0.0, softcap=None):
    """cross entropy + z_loss * logsumexp^2 over the non-ignored rows, after the softcap."""
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    ce = F.cross_entropy(x, target, weight=weight, ignore_index=ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing)
    lse = torch.logsumexp(x, dim=1 if x.dim() > 1 else 0)
    valid = (target != ignore_index) if target.dtype != x.dtype else torch.ones_like(lse, dtype=torch.bool)
    z = torch.where(valid, z_loss * lse * lse, torch.zeros_like(lse))
    z = {"none": z, "sum": z.sum(), "mean": z.sum() / valid.sum()}[reduction]
    return ce + z, z


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [{"z_loss": 1e-3}, {"softcap": 5.0}, {"z_loss": 0.05, "softcap": 2.0},
                                     {"z_loss": 0.01, "softcap": 3.0, "label_smoothing": 0.1, "weight": True}],
                         ids=["z", "softcap", "z+softcap", "all"])
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 5), (2, 2000)])
def test_z_loss_and_softcap_match_their_formulas(shape, reduction, dtype, options, device):
    x, x64, target, classes = make_case(shape, dtype, device)
    kw = dict(options)
    w = class_weight(classes, dtype, device) if kw.pop("weight", False) else None
    check_against(lambda v: FL.cross_entropy(v, target, weight=w, reduction=reduction, **kw),
                  lambda v: z_softcap_reference(v, target, None if w is None else w.double(),
                                                reduction=reduction, **kw)[0],
                  x, x64, dtype)
    loss, z = FL.cross_entropy_with_z_loss(x, target, weight=w, reduction=reduction, **kw)
    ref_loss, ref_z = z_softcap_reference(x64, target, None if w is None else w.double(),
                                          reduction=reduction, **kw)
    assert_close(loss.double(), ref_loss, dtype)
    assert_close(z.double(), ref_z, dtype)
    assert not z.requires_grad


def test_z_loss_with_probability_targets(device):
    x, x64, target, _ = make_case((5, 7), torch.float64, device, probabilities=True)
    lse = torch.logsumexp(x64, 1)
    ours = FL.cross_entropy(x, target, z_loss=0.1)
    assert_close(ours, F.cross_entropy(x64, target) + 0.1 * (lse * lse).mean())


def test_out_of_range_target_is_index_error_naming_the_value(device):
    x = torch.randn(4, 5, device=device)
    for bad in (5, -3):
        target = torch.tensor([0, 1, bad, 2], device=device)
        with raises(IndexError, match=rf"target {bad} is out of bounds.*\[0, 5\).*position 2"):
            FL.cross_entropy(x, target)
        with raises(IndexError, match=rf"target {bad} is out of bounds"):
            FL.nll_loss(torch.log_softmax(x, 1), target)
    with raises(IndexError, match="target 5 is out of bounds"):
        FL.cross_entropy(torch.randn(2, 5, 3, device=device),
                         torch.tensor([[0, 1, 2], [4, 5, 0]], device=device))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_zero_classes_with_every_target_ignored_matches_torch(reduction, device):
    x = torch.empty(3, 0, device=device)
    t = torch.full((3,), -100, device=device)
    assert_close(FL.cross_entropy(x, t, reduction=reduction),
                 F.cross_entropy(x, t, reduction=reduction), torch.float32)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_retained_graph_survives_a_hook_that_changes_the_gradient(reduction, device):
    # The first backward's gradient must be a copy when the graph is kept: a hook may change it.
    x = torch.randn(4, 5, device=device, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3], device=device)
    loss = FL.cross_entropy(x, t, reduction=reduction).sum()
    x.register_hook(lambda g: g.mul_(2))
    first = torch.autograd.grad(loss, x, retain_graph=True)[0].clone()
    assert torch.equal(first, torch.autograd.grad(loss, x)[0])


def test_unchecked_out_of_range_target_gives_nan_not_a_crash(device):
    x = torch.randn(4, 5, device=device, requires_grad=True)
    target = torch.tensor([0, 1, 1 << 40, 2], device=device)
    loss = FL.cross_entropy(x, target, reduction="none", check_target=False)
    assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3]]).all()
    loss.sum().backward()
    assert torch.isnan(x.grad[2]).all() and torch.isfinite(x.grad[[0, 1, 3]]).all()
    assert torch.isnan(FL.cross_entropy(x, target, check_target=False))
    assert torch.isnan(FL.nll_loss(x, target, reduction="none", check_target=False)[2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7,), (5, 7), (3, 4, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_torch(shape, reduction, dtype, weighted, device):
    x, x64, target, classes = make_case(shape, dtype, device)
    dim = 0 if len(shape) == 1 else 1
    w = class_weight(classes, dtype, device) if weighted else None
    check_against(
        lambda v: FL.nll_loss(torch.log_softmax(v, dim), target, weight=w, reduction=reduction),
        lambda v: F.nll_loss(torch.log_softmax(v, dim), target,
                             weight=None if w is None else w.double(), reduction=reduction),
        x, x64, dtype)


def test_nll_loss_every_target_ignored_and_infinite_inputs(device):
    x = torch.full((3, 4), float("-inf"), device=device)
    target = torch.full((3,), -100, device=device)
    for reduction in REDUCTIONS:
        assert_close(FL.nll_loss(x, target, reduction=reduction),
                     F.nll_loss(x, target, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", ["transposed", "kdim-sliced", "empty"])
def test_nll_loss_gradient_written_in_one_pass_matches_torch(layout, reduction, device):
    # The fused backward writes the whole gradient itself: strided inputs, K dims, an
    # ignore_index that is a valid class (0), a class weight of 0, and an empty batch.
    g = torch.Generator().manual_seed(5)
    if layout == "transposed":
        x = torch.randn(6, 9, generator=g, dtype=torch.float64).t()  # (9, 6), not contiguous
        target = torch.randint(6, (9,), generator=g)
    elif layout == "kdim-sliced":
        x = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.float64)[..., ::2]  # (3, 5, 4, 2)
        target = torch.randint(5, (3, 4, 2), generator=g)
    else:
        x = torch.randn(0, 5, dtype=torch.float64)
        target = torch.zeros(0, dtype=torch.long)
    classes = x.shape[1]
    w = torch.rand(classes, generator=g, dtype=torch.float64)
    w[classes - 1] = 0
    x, target, w = x.to(device), target.to(device), w.to(device)
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = FL.nll_loss(ours_x, target, weight=w, ignore_index=0, reduction=reduction)
    ref = F.nll_loss(ref_x, target, weight=w, ignore_index=0, reduction=reduction)
    assert_close(ours, ref, torch.float64)
    grad = torch.rand_like(ref)
    ours.backward(grad)
    ref.backward(grad)
    assert_close(ours_x.grad, ref_x.grad, torch.float64)
    assert ours_x.grad.shape == x.shape


def multi_margin_reference(x, target, p=1, margin=1.0, weight=None, reduction="mean"):
    """torch's formula written out (torch's CPU kernel has no float16/bfloat16)."""
    x2 = x.unsqueeze(0) if x.dim() == 1 else x
    t = target.view(-1, 1)
    z = (margin - x2.gather(1, t) + x2).clamp_min(0)
    z = z.pow(p).scatter(1, t, 0.0)
    if weight is not None:
        z = z * weight[target.view(-1)].unsqueeze(1)
    loss = z.sum(1) / x2.shape[1]
    loss = loss.view(target.shape)
    return {"none": loss, "mean": loss.mean() if loss.numel() else loss.sum(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("shape", [(7,), (5, 7), (4, 1100), (0, 3)])
@pytest.mark.parametrize("options", [{}, {"margin": 0.3, "weight": True}, {"margin": -0.5}],
                         ids=["plain", "margin+weight", "negative-margin"])
def test_multi_margin_loss_matches_torch(shape, p, reduction, dtype, options, device):
    x, x64, _, classes = make_case(shape, dtype, device)
    g = torch.Generator().manual_seed(3)
    target = (torch.randint(classes, (shape[0],) if len(shape) > 1 else (), generator=g)).to(device)
    kw = dict(options)
    w = class_weight(classes, dtype, device) if kw.pop("weight", False) else None
    # torch's CPU kernel has no float16/bfloat16, and on an empty batch it returns uninitialized
    # memory for 'mean'/'sum' (seen as -1.8e-06 under AddressSanitizer): the formula instead.
    use_torch = dtype in (torch.float32, torch.float64) and shape[0] != 0
    ref_fn = F.multi_margin_loss if use_torch else multi_margin_reference
    check_against(lambda v: FL.multi_margin_loss(v, target, p=p, weight=w, reduction=reduction, **kw),
                  lambda v: ref_fn(v, target, p=p, weight=None if w is None else w.double(),
                                   reduction=reduction, **kw),
                  x, x64, dtype)


def test_multi_margin_bad_arguments(device):
    x = torch.randn(4, 5, device=device)
    t = torch.tensor([0, 1, 2, 3], device=device)
    with pytest.raises(ValueError, match="only p == 1 and p == 2.*got 3"):
        FL.multi_margin_loss(x, t, p=3)
    with raises(RuntimeError, match="target 7 is out of range.*\\[0, 5\\)"):
        FL.multi_margin_loss(x, torch.tensor([0, 1, 7, 3], device=device))
    with pytest.raises(RuntimeError, match="one value per class \\(5\\), got shape \\[3\\]"):
        FL.multi_margin_loss(x, t, weight=torch.ones(3, device=device))
    with pytest.raises(RuntimeError, match="input \\(C\\) or \\(N, C\\)"):
        FL.multi_margin_loss(torch.randn(2, 3, 4, device=device), t[:2])
    with pytest.raises(RuntimeError, match="one class per row of input \\(4\\), got shape \\[3\\]"):
        FL.multi_margin_loss(x, t[:3])
    with pytest.raises(RuntimeError, match="int64"):
        FL.multi_margin_loss(x, t.int())


@pytest.mark.parametrize("kwargs,error,match", [
    ({"weight": torch.ones(3)}, RuntimeError, r"weight must be a 1-D tensor with one value per class \(5\), got shape \[3\]"),
    ({"weight": torch.ones(5, dtype=torch.float64)}, RuntimeError, "weight must have the input's dtype \\(Float\\), got Double"),
    ({"label_smoothing": 1.5}, RuntimeError, "label_smoothing must be between 0.0 and 1.0, got 1.5"),
    ({"label_smoothing": -0.1}, RuntimeError, "label_smoothing must be between 0.0 and 1.0, got -0.1"),
    ({"z_loss": -1.0}, ValueError, "z_loss must be a finite number >= 0, got -1"),
    ({"z_loss": float("nan")}, ValueError, "z_loss must be a finite number >= 0, got nan"),
    ({"softcap": 0.0}, ValueError, "softcap must be a finite number > 0"),
    ({"reduction": "avg"}, ValueError, "reduction must be 'none', 'mean' or 'sum', got 'avg'"),
])
def test_cross_entropy_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        FL.cross_entropy(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), **kwargs)


def test_cross_entropy_bad_shapes_and_dtypes():
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"expected input batch_size \(4\) to match target batch_size \(3\)"):
        FL.cross_entropy(x, torch.tensor([0, 1, 2]))
    with pytest.raises(RuntimeError, match=r"target of shape \[2, 4\] does not match input of shape \[2, 5, 3\]; expected target shape \[2, 3\]"):
        FL.cross_entropy(torch.randn(2, 5, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="class-index target must be int64 \\(or uint8\\).*got Int"):
        FL.cross_entropy(x, torch.tensor([0, 1, 2, 3], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="class-index target must be int64.*got Float.*input's shape"):
        FL.cross_entropy(x, torch.rand(4))
    with pytest.raises(RuntimeError, match="ignore_index is not supported for probability"):
        FL.cross_entropy(x, torch.rand(4, 5), ignore_index=2)
    with pytest.raises(RuntimeError, match="input must have a class dimension.*0-d"):
        FL.cross_entropy(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(NotImplementedError, match="input must be float32.*got Long"):
        FL.cross_entropy(torch.ones(3, 4, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="class-index target must be int64"):
        FL.nll_loss(x, torch.rand(4, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a device mismatch")
def test_device_mismatch_is_clear():
    with pytest.raises(RuntimeError, match="same device"):
        FL.cross_entropy(torch.randn(4, 5, device="cuda"), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(RuntimeError, match="weight must be on the device of input"):
        FL.cross_entropy(torch.randn(4, 5, device="cuda"), torch.tensor([0, 1, 2, 3], device="cuda"),
                         weight=torch.ones(5))


def test_nan_and_inf_logits_propagate_like_torch(device):
    x = torch.randn(5, 4, device=device, dtype=torch.float64)
    x[0, 1] = float("nan")
    x[1, :] = float("-inf")
    x[2, 3] = float("inf")
    x[3, 0] = float("-inf")
    target = torch.tensor([0, 1, 2, 1, 3], device=device)
    ours = FL.cross_entropy(x, target, reduction="none")
    assert_close(ours, F.cross_entropy(x, target, reduction="none"))


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 5, -100, 2])
    w = torch.rand(6, generator=g, dtype=torch.float64)
    y = torch.softmax(torch.randn(4, 6, generator=g, dtype=torch.float64), 1).requires_grad_()
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(lambda v: FL.cross_entropy(
            v, t, weight=w, reduction=reduction, label_smoothing=0.2, z_loss=0.1, softcap=2.5), (x,))
        assert torch.autograd.gradcheck(lambda v, p: FL.cross_entropy(
            v, p, weight=w, reduction=reduction, label_smoothing=0.1), (x, y))
        assert torch.autograd.gradcheck(lambda v: FL.cross_entropy(
            v.view(2, 3, 4), torch.tensor([[0, 1, 2, -100], [2, 2, 1, 0]]), reduction=reduction), (x,))
        assert torch.autograd.gradcheck(lambda v: FL.nll_loss(v, t, weight=w, reduction=reduction), (x,))
        for p in (1, 2):
            assert torch.autograd.gradcheck(lambda v: FL.multi_margin_loss(
                v, t.clamp_min(0), p=p, margin=0.5, weight=w, reduction=reduction), (x,))


def test_double_backward_raises_clear_error():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2])
    for fn in (lambda: FL.cross_entropy(x, t), lambda: FL.multi_margin_loss(x, t)):
        with pytest.raises(RuntimeError, match="double backward.*not supported"):
            torch.autograd.grad(fn(), x, create_graph=True)
    # nll_loss is composed of differentiable ATen ops: its second derivative is correct.
    assert torch.autograd.gradgradcheck(lambda v: FL.nll_loss(v, t), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_is_the_saved_buffer(dtype):
    """The fused gradient becomes logits.grad without a copy, and nothing else is kept."""
    x = torch.randn(8, 50, dtype=dtype, requires_grad=True)
    t = torch.randint(50, (8,))
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda s: sizes.append(s.numel()) or s, lambda s: s):
        loss = FL.cross_entropy(x, t)
    assert sum(sizes) <= x.numel() + 1  # the gradient (and a 0-d backward scale)
    loss.backward()
    assert x.grad.shape == x.shape


def test_mean_gradient_does_not_underflow_in_float16(device):
    """1/N is applied in float in backward for float16, so tiny softmax terms survive loss scaling."""
    x = torch.zeros(4096, 8, dtype=torch.float16, device=device)
    x[:, 0] = 12.0
    t = torch.zeros(4096, dtype=torch.long, device=device)
    xg = x.clone().requires_grad_()
    (FL.cross_entropy(xg, t) * 1024).backward()  # a loss scale as in mixed precision
    xr = x.double().requires_grad_()
    (F.cross_entropy(xr, t) * 1024).backward()
    assert_close(xg.grad.double(), xr.grad, torch.float16)


OPS = {
    "cross_entropy": lambda d: ((torch.randn(4, 5, device=d), torch.tensor([0, 4, -100, 2], device=d),
                                 torch.rand(5, device=d), -100, "mean", 0.1),
                                {"z_loss": 0.01, "softcap": 3.0}),
    "cross_entropy_probabilities": lambda d: ((torch.randn(3, 4, 2, device=d), torch.rand(3, 4, 2, device=d),
                                               None, -100, "none", 0.0), {}),
    "cross_entropy_with_z_loss": lambda d: ((torch.randn(4, 5, device=d), torch.tensor([0, 4, 1, 2], device=d),
                                             None, -100, "sum", 0.0), {"z_loss": 0.1}),
    "nll_loss": lambda d: ((torch.randn(4, 5, device=d), torch.tensor([0, 4, -100, 2], device=d),
                            torch.rand(5, device=d), -100, "mean"), {}),
    "multi_margin_loss": lambda d: ((torch.randn(4, 5, device=d), torch.tensor([0, 4, 1, 2], device=d),
                                     2, 0.7, torch.rand(5, device=d), "mean"), {}),
    "cosine_embedding_loss": lambda d: ((torch.randn(4, 5, device=d), torch.randn(4, 5, device=d),
                                         torch.tensor([1.0, -1.0, 1.0, -1.0], device=d), 0.2, "mean"), {}),
}


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(name, requires_grad, device):
    args, kwargs = OPS[name](device)
    args = (args[0].requires_grad_(requires_grad),) + args[1:]
    op = getattr(torch.ops.fusedloss, name.replace("_probabilities", ""))
    torch.library.opcheck(op, args, kwargs)


def test_opcheck_internal_forward(device):
    x = torch.randn(4, 5, device=device)
    t = torch.tensor([0, 4, -100, 2], device=device)
    torch.library.opcheck(torch.ops.fusedloss._cross_entropy_forward,
                          (x, t, None, -100, "mean", 0.1, 0.01, 2.0, True, True, False))
    torch.library.opcheck(torch.ops.fusedloss._multi_margin_loss_forward,
                          (x, t.clamp_min(0), None, 1, 1.0, "sum", True))
    for reduction in ["mean", "none"]:
        loss, total_weight = torch.ops.fusedloss._nll_loss_forward(x, t, torch.rand(5, device=device), -100,
                                                                   reduction, True)
        torch.library.opcheck(torch.ops.fusedloss._nll_loss_forward,
                              (x.view(2, 5, 2), t.view(2, 2), None, -100, reduction, True))
        torch.library.opcheck(torch.ops.fusedloss._nll_loss_backward,
                              (torch.rand_like(loss), t, torch.rand(5, device=device), total_weight, [4, 5], -100,
                               reduction))


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss", "multi_margin_loss"])
def test_torch_compile_fullgraph(name, device):
    torch._dynamo.reset()
    fn = getattr(FL, name)
    ref = getattr(F, name)
    x = torch.randn(6, 5, device=device, requires_grad=True)
    t = torch.tensor([0, 4, 1, 2, 3, 3], device=device)
    compiled = torch.compile(lambda v, u: fn(v, u), fullgraph=True)
    loss = compiled(x, t)
    (g,) = torch.autograd.grad(loss, x)
    xr = x.detach().clone().requires_grad_()
    lr = ref(xr, t)
    lr.backward()
    assert_close(loss, lr)
    assert_close(g, xr.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("classes", [1, 2, 5, 10, 12])
def test_few_classes_across_vector_lanes(classes, dtype, device):
    # C <= 12 runs 64 rows at a time with the rows across vector lanes: full and partial blocks,
    # ignored and smoothed rows, against torch's float64 values and gradients.
    for rows in (1, 63, 64, 65, 200):
        x = (torch.randn(rows, classes, dtype=torch.float64) * 3).to(device)
        t = torch.randint(classes, (rows,), device=device)
        t[::7] = -100
        for kw in ({}, {"label_smoothing": 0.2}):
            ours_x = x.to(dtype).clone().requires_grad_()
            ref_x = ours_x.detach().double().requires_grad_()
            ours = FL.cross_entropy(ours_x, t, reduction="none", **kw)
            ref = F.cross_entropy(ref_x, t, reduction="none", **kw)
            grad = torch.linspace(0.5, 1.5, rows, dtype=torch.float64, device=device)
            ours.backward(grad.to(dtype))
            ref.backward(grad)
            assert_close(ours, ref.to(dtype), dtype)
            assert_close(ours_x.grad, ref_x.grad.to(dtype), dtype)


@pytest.mark.parametrize("classes", [10, 100, 300])
def test_a_row_is_the_same_for_any_thread_count_and_batch(classes):
    # Rows go in blocks (C <= 12: 64 rows across vector lanes; C <= 128: tiles of 4096 logits)
    # that lie on a fixed grid, and no element falls to a loop's scalar remainder (whose exp and
    # log may differ from the vector ones in the last bit): a row's loss and gradient are bitwise
    # the same at 1, 2, 3 and 5 threads, and when the row is computed alone.
    x = torch.randn(3001, classes) * 3
    t = torch.randint(classes, (3001,))
    t[::7] = -100
    threads = torch.get_num_threads()

    def run(rows, kw):
        xg = x[rows].clone().requires_grad_()
        loss = FL.cross_entropy(xg, t[rows], reduction="none", **kw)
        loss.sum().backward()
        return loss.detach(), xg.grad

    try:
        for kw in ({}, {"label_smoothing": 0.1}):
            torch.set_num_threads(1)
            loss, grad = run(slice(None), kw)
            for n in (2, 3, 5):
                torch.set_num_threads(n)
                other_loss, other_grad = run(slice(None), kw)
                assert torch.equal(other_loss, loss) and torch.equal(other_grad, grad), n
            for r in (0, 1, 63, 64, 1000, 3000):
                alone_loss, alone_grad = run(slice(r, r + 1), kw)
                assert torch.equal(alone_loss, loss[r:r + 1]) and torch.equal(alone_grad, grad[r:r + 1]), r
    finally:
        torch.set_num_threads(threads)


def test_bitwise_deterministic(device):
    x = torch.randn(64, 3000, device=device)
    t = torch.randint(3000, (64,), device=device)
    assert_bitwise_deterministic(lambda v: FL.cross_entropy(v, t, label_smoothing=0.1, z_loss=1e-4), x)
    xk = torch.randn(4, 7, 33, 9, device=device)
    tk = torch.randint(7, (4, 33, 9), device=device)
    assert_bitwise_deterministic(lambda v: FL.cross_entropy(v, tk), xk)
    assert_bitwise_deterministic(lambda v: FL.multi_margin_loss(v, t, p=2), x)
    # Many rows of few classes: rows 64 at a time across vector lanes, sums over several parts.
    xs = torch.randn(40000, 10, device=device)
    ts = torch.randint(10, (40000,), device=device)
    ts[::13] = -100
    assert_bitwise_deterministic(lambda v: FL.cross_entropy(v, ts, label_smoothing=0.05), xs)
    assert_bitwise_deterministic(lambda v: FL.nll_loss(v, ts), xs)


@pytest.mark.parametrize("ours_cls,torch_cls,kwargs", [
    (fusedloss.nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, {"label_smoothing": 0.1, "ignore_index": 2}),
    (fusedloss.nn.NLLLoss, torch.nn.NLLLoss, {"reduction": "sum"}),
    (fusedloss.nn.MultiMarginLoss, torch.nn.MultiMarginLoss, {"p": 2, "margin": 0.5}),
])
def test_modules_are_drop_in(ours_cls, torch_cls, kwargs):
    w = torch.rand(5)
    ours, theirs = ours_cls(weight=w, **kwargs), torch_cls(weight=w, **kwargs)
    assert isinstance(ours, torch_cls)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(6, 5)
    t = torch.tensor([0, 1, 2, 3, 4, 2])
    assert_close(ours(x, t), theirs(x, t))
    scripted = torch.jit.script(ours)
    assert_close(scripted(x, t), theirs(x, t))


def test_cross_entropy_module_extras_script():
    module = torch.jit.script(fusedloss.nn.CrossEntropyLoss(z_loss=0.01, softcap=4.0))
    x = torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 4, 2])
    assert_close(module(x, t), z_softcap_reference(x, t, z_loss=0.01, softcap=4.0)[0])


def test_replace_losses_covers_the_multiclass_modules():
    model = torch.nn.ModuleDict({"ce": torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                                 "nll": torch.nn.NLLLoss(), "mm": torch.nn.MultiMarginLoss(p=2)})
    fusedloss.nn.replace_losses(model)
    assert type(model["ce"]) is fusedloss.nn.CrossEntropyLoss and model["ce"].label_smoothing == 0.1
    assert model["ce"].z_loss == 0.0 and model["ce"].softcap is None
    x = torch.randn(3, 4)
    t = torch.tensor([0, 1, 3])
    assert_close(model["ce"](x, t), F.cross_entropy(x, t, label_smoothing=0.1))
    assert type(model["mm"]) is fusedloss.nn.MultiMarginLoss


def test_many_threads_give_the_results_of_one(device):
    from concurrent.futures import ThreadPoolExecutor
    x = torch.randn(64, 500, device=device)
    t = torch.randint(500, (64,), device=device)

    def run(_):
        xg = x.clone().requires_grad_()
        loss = FL.cross_entropy(xg, t, label_smoothing=0.1)
        loss.backward()
        return loss.detach(), xg.grad

    reference = run(0)
    with ThreadPoolExecutor(8) as pool:
        for loss, grad in pool.map(run, range(32)):
            assert torch.equal(loss, reference[0]) and torch.equal(grad, reference[1])


def test_strided_and_expanded_targets(device):
    x, x64, target, _ = make_case((8, 6), torch.float64, device, ignore_every=0)
    wide = torch.stack([target, target.flip(0)], 1)  # target = wide[:, 0]: stride 2
    check_against(lambda v: FL.cross_entropy(v, wide[:, 0]), lambda v: F.cross_entropy(v, target), x, x64,
                  torch.float64)
    expanded = target[:1].expand(8)  # stride 0
    check_against(lambda v: FL.cross_entropy(v, expanded, reduction="none"),
                  lambda v: F.cross_entropy(v, expanded.contiguous(), reduction="none"), x, x64, torch.float64)
    check_against(lambda v: FL.nll_loss(v, wide[:, 0]), lambda v: F.nll_loss(v, target), x, x64, torch.float64)
    check_against(lambda v: FL.multi_margin_loss(v, wide[:, 0]), lambda v: F.multi_margin_loss(v, target),
                  x, x64, torch.float64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_shape", [(), (1,)], ids=str)
def test_multi_margin_0d_input_is_one_row_of_one_class_like_torch(target_shape, reduction, device):
    x = torch.tensor(0.7, device=device, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    t = torch.zeros(target_shape, dtype=torch.long, device=device)
    ours = FL.multi_margin_loss(x, t, reduction=reduction)
    expected = F.multi_margin_loss(x_ref, t, reduction=reduction)
    assert ours.shape == expected.shape
    assert_close(ours, expected)
    ours.sum().backward()
    expected.sum().backward()
    assert x.grad.shape == () and torch.equal(x.grad, x_ref.grad)
    with raises(RuntimeError, match="target 1 is out of range"):
        FL.multi_margin_loss(x.detach(), torch.ones(target_shape, dtype=torch.long, device=device))


# (input shape, target shape); the second input has the first's shape, or (6, 5) for (1, 5).
COSINE_CASES = [((6, 5), (6,)), ((5,), ()), ((6, 5), (1,)), ((1, 5), (6,)), ((0, 4), (0,)), ((3, 700), (3,))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", COSINE_CASES, ids=str)
def test_cosine_embedding_matches_torch(shapes, reduction, dtype, device):
    # Labels 1 and -1 (and one 0.5: loss 0, as torch), margins on both sides of the rows'
    # cosines; input1 broadcast against input2 where one has a single row; empty; long rows.
    input_shape, target_shape = shapes
    g = torch.Generator().manual_seed(6)
    x1 = torch.randn(input_shape, generator=g, dtype=torch.float64)
    x2 = torch.randn(input_shape if input_shape[0] != 1 else (6, 5), generator=g, dtype=torch.float64)
    y = (torch.rand(target_shape, generator=g) > 0.5).double() * 2 - 1
    if y.numel() > 2:
        y[1] = 0.5
    for margin in (0.0, 0.3):
        x1d, x2d = x1.to(dtype).to(device), x2.to(dtype).to(device)
        yd = y.to(device)
        ours_in = [x1d.clone().requires_grad_(), x2d.clone().requires_grad_()]
        ref_in = [x1d.double().clone().requires_grad_(), x2d.double().clone().requires_grad_()]
        ours = FL.cosine_embedding_loss(*ours_in, yd, margin=margin, reduction=reduction)
        expected = F.cosine_embedding_loss(*ref_in, yd.double(), margin=margin, reduction=reduction)
        assert ours.dtype == dtype and ours.shape == expected.shape
        assert_close(ours.double(), expected.detach().to(dtype).double(), dtype)
        grad_output = torch.rand_like(expected) + 0.5
        ours.backward(grad_output.to(dtype))
        expected.backward(grad_output.to(dtype).double())
        for a, b in zip(ours_in, ref_in):
            assert a.grad.shape == a.shape
            assert_close(a.grad.double(), b.grad.to(dtype).double(), dtype)


def test_cosine_embedding_gradcheck_module_and_errors():
    g = torch.Generator().manual_seed(7)
    x1, x2 = (torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    y = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, b: FL.cosine_embedding_loss(a, b, y, margin=-0.5, reduction=reduction), (x1, x2))
    ours, reference = fusedloss.nn.CosineEmbeddingLoss(margin=0.2), torch.nn.CosineEmbeddingLoss(margin=0.2)
    assert isinstance(ours, torch.nn.CosineEmbeddingLoss)
    assert_close(ours(x1, x2, y), reference(x1, x2, y))
    assert_close(torch.jit.script(ours)(x1, x2, y), reference(x1, x2, y))
    labels = torch.tensor([1, -1, -1, 1])  # integer labels, as torch accepts
    assert_close(FL.cosine_embedding_loss(x1, x2, labels), F.cosine_embedding_loss(x1, x2, labels))
    with pytest.raises(RuntimeError, match=r"1D target tensor expects 2D input tensors, but found inputs with sizes \[6\] and \[6\]"):
        FL.cosine_embedding_loss(x1[0], x2[0], y)
    with pytest.raises(RuntimeError, match="0D or 1D target tensor expected"):
        FL.cosine_embedding_loss(x1, x2, y.view(2, 2))
    with pytest.raises(RuntimeError, match=r"input1 and input2 of shapes \[4, 6\] and \[4, 5\] are not broadcastable"):
        FL.cosine_embedding_loss(x1, x2[:, :5], y)
    with pytest.raises(RuntimeError, match="one label per row"):
        FL.cosine_embedding_loss(x1, x2, y[:3])
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(FL.cosine_embedding_loss(x1, x2, y), x1, create_graph=True)
    nan = x1.detach().clone()
    nan[1, 0] = float("nan")  # a NaN cosine past the margin stays NaN, as torch's clamp_min
    assert torch.isnan(FL.cosine_embedding_loss(nan, x2, y, reduction="none")[1])


@pytest.mark.parametrize("requires_grad", [False, True])
def test_cosine_embedding_opcheck_and_compile(requires_grad, device):
    x1 = torch.randn(5, 4, device=device, requires_grad=requires_grad)
    x2 = torch.randn(5, 4, device=device)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0], device=device)
    for reduction in REDUCTIONS:
        torch.library.opcheck(torch.ops.fusedloss.cosine_embedding_loss, (x1, x2, y, 0.1, reduction))
        torch.library.opcheck(torch.ops.fusedloss._cosine_embedding_loss_forward,
                              (x1.detach(), x2, y, 0.1, reduction, True))
    if requires_grad:
        torch._dynamo.reset()
        compiled = torch.compile(lambda a, b: FL.cosine_embedding_loss(a, b, y), fullgraph=True, backend="aot_eager")
        out = compiled(x1, x2)
        out.backward()
        xr = x1.detach().clone().requires_grad_()
        expected = F.cosine_embedding_loss(xr, x2, y)
        expected.backward()
        assert_close(out, expected)
        assert_close(x1.grad, xr.grad)


def test_nll_loss_backward_op_refuses_arguments_that_do_not_fit():
    # The internal op is callable on its own: what its kernel indexes with must fit the gradient.
    t = torch.tensor([0, 4, 1, 2])
    g, tw = torch.tensor(1.0), torch.tensor(4.0)
    backward = torch.ops.fusedloss._nll_loss_backward
    with pytest.raises(RuntimeError, match=r"input_size \[2, 5\] has 2 rows, target has 4 elements"):
        backward(g, t, None, tw, [2, 5], -100, "mean")
    with pytest.raises(RuntimeError, match="weight must hold one value per class"):
        backward(g, t, torch.ones(3), tw, [4, 5], -100, "mean")
    with pytest.raises(RuntimeError, match="needs a 0-d total_weight"):
        backward(g, t, None, torch.empty(0), [4, 5], -100, "sum")
    assert backward(g, t, None, tw, [4, 5], -100, "mean").shape == (4, 5)

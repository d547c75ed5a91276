"""The regression losses (MSE, L1, Huber, SmoothL1) against torch.nn.functional: values and
gradients over shapes, strides, broadcasting, dtypes, reductions and options, plus gradcheck,
opcheck, torch.compile, bad input and determinism."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from tolerances import DTYPES, assert_bitwise_deterministic, assert_close

FL = fusedloss.functional

# name -> (ours, torch's, keyword options); the options put kinks inside the sampled range.
LOSSES = {
    "mse_loss": (FL.mse_loss, F.mse_loss, {}),
    "l1_loss": (FL.l1_loss, F.l1_loss, {}),
    "huber_loss": (FL.huber_loss, F.huber_loss, {"delta": 0.7}),
    "huber_loss_delta_2.5": (FL.huber_loss, F.huber_loss, {"delta": 2.5}),
    "smooth_l1_loss": (FL.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.5}),
    "smooth_l1_loss_beta_0": (FL.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.0}),
}
REDUCTIONS = ["none", "mean", "sum"]
SHAPES = [(), (0,), (7,), (3, 5), (2, 3, 4), (1029,)]


def make_pair(shape, dtype, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=generator, dtype=torch.float64) * 2).to(dtype)
    y = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    return x.to(device), y.to(device)


def check_against_torch(name, x, y, reduction, grad_target=True):
    """Runs ours and torch's on copies of x, y; compares values and both gradients."""
    ours_fn, torch_fn, options = LOSSES[name]
    xs = [x.detach().clone().requires_grad_() for _ in range(2)]
    ys = [y.detach().clone().requires_grad_(grad_target) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broadcasting warning, checked on its own below
        ours = ours_fn(xs[0], ys[0], reduction=reduction, **options)
        expected = torch_fn(xs[1], ys[1], reduction=reduction, **options)
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    assert_close(ours, expected, msg=f"{name} value")
    grad_output = torch.rand_like(expected) + 0.5
    ours.backward(grad_output)
    expected.backward(grad_output)
    assert_close(xs[0].grad, xs[1].grad, msg=f"{name} grad input")
    if grad_target:
        assert_close(ys[0].grad, ys[1].grad, msg=f"{name} grad target")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_matches_torch(name, reduction, dtype, shape, device):
    x, y = make_pair(shape, dtype, device)
    check_against_torch(name, x, y, reduction)


@pytest.mark.parametrize("name", LOSSES)
def test_large_input_spans_many_chunks(name, device):
    # 300k elements: several parallel chunks and a ragged tail.
    x, y = make_pair((300_007,), torch.float32, device)
    for reduction in REDUCTIONS:
        check_against_torch(name, x, y, reduction)


@pytest.mark.parametrize("name", LOSSES)
def test_non_contiguous_inputs(name, device):
    x, y = make_pair((6, 8, 5), torch.float32, device)
    check_against_torch(name, x.transpose(0, 2), y.transpose(0, 2), "none")
    check_against_torch(name, x[:, ::2, 1:], y[:, 1::2, :-1], "mean")
    check_against_torch(name, x[:, :1, :].expand(6, 8, 5), y, "sum")  # stride 0
    check_against_torch(name, x.permute(1, 0, 2), y.permute(1, 0, 2).contiguous(), "sum")


@pytest.mark.parametrize(
    "input_shape, target_shape", [((4, 1, 3), (5, 1)), ((3,), ()), ((2, 3), (3,)), ((1,), (4, 4))]
)
@pytest.mark.parametrize("name", LOSSES)
def test_broadcasting_matches_torch_and_warns(name, input_shape, target_shape, device):
    x, _ = make_pair(input_shape, torch.float64, device)
    _, y = make_pair(target_shape, torch.float64, device, seed=1)
    for reduction in REDUCTIONS:
        check_against_torch(name, x, y, reduction)
    ours_fn, _, options = LOSSES[name]
    with pytest.warns(UserWarning, match="different to the input size"):
        ours_fn(x, y, **options)


def test_same_shape_does_not_warn():
    x, y = make_pair((3, 4), torch.float32, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FL.mse_loss(x, y)


@pytest.mark.parametrize("name", LOSSES)
def test_kinks_and_special_values(name, device):
    # d = 0, +-0.5 (SmoothL1 beta), +-0.7 (Huber delta), +-2.5, +-inf, nan.
    values = [0.0, 0.5, -0.5, 0.7, -0.7, 2.5, -2.5, 3.0, float("inf"), float("-inf"), float("nan")]
    d = torch.tensor(values, dtype=torch.float64, device=device)
    y = torch.linspace(-1, 1, len(values), dtype=torch.float64, device=device)
    for reduction in REDUCTIONS:
        check_against_torch(name, y + d, y, reduction)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", LOSSES)
def test_large_values_in_half_precision(name, dtype, device):
    # Near the top of float16's range: (x - t)^2 overflows to inf exactly as in torch.
    x = torch.tensor([6e4, -6e4, 300.0, 1e-4], device=device).to(dtype)
    y = torch.tensor([-6e4, 6e4, -300.0, 0.0], device=device).to(dtype)
    check_against_torch(name, x, y, "none")
    check_against_torch(name, x, y, "sum")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mean_gradient_does_not_underflow_in_half_precision(dtype, device):
    # 1/n is applied in float32 in backward and the product rounded once: the half gradient of a
    # large mean stays right under loss scaling, as torch's. (1/n = 2**-25 itself is below
    # float16's smallest subnormal, so a half-precision scale would give 0.)
    n = 1 << 25
    x = torch.full((n,), 1.0, dtype=dtype, device=device, requires_grad=True)
    y = torch.zeros(n, dtype=dtype, device=device)
    FL.mse_loss(x, y).backward(torch.tensor(1024.0, dtype=dtype, device=device))
    expected = 2 * 1024.0 / n  # 2**-14, exactly representable
    assert torch.equal(x.grad, torch.full_like(x.grad, expected))


@pytest.mark.parametrize(
    "input_dtype, target_dtype",
    [(torch.float32, torch.float64), (torch.float16, torch.float32), (torch.float32, torch.int64),
     (torch.bfloat16, torch.float16)],
)
def test_dtype_promotion_matches_torch(input_dtype, target_dtype):
    x = torch.randn(5, 4).to(input_dtype)
    y = (torch.randn(5, 4) * 3).to(target_dtype)
    ours = FL.mse_loss(x, y)
    expected = F.mse_loss(x, y)
    assert ours.dtype == expected.dtype
    assert_close(ours, expected)
    xg = x.clone().requires_grad_()
    FL.l1_loss(xg, y).backward()
    assert xg.grad.dtype == input_dtype


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_gradcheck_float64(name, reduction):
    ours_fn, _, options = LOSSES[name]
    x, y = make_pair((4, 3), torch.float64, "cpu")
    # Keep away from the kinks, where finite differences straddle two branches.
    x = torch.where((x - y).abs() < 0.05, x + 0.2, x)
    if name.startswith("huber"):
        x = torch.where(((x - y).abs() - options["delta"]).abs() < 0.05, x + 0.2, x)
    if name.startswith("smooth_l1") and options["beta"] > 0:
        x = torch.where(((x - y).abs() - options["beta"]).abs() < 0.05, x + 0.2, x)
    x.requires_grad_()
    y.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: ours_fn(a, b, reduction=reduction, **options), (x, y)
    )


@pytest.mark.parametrize("name", LOSSES)
def test_double_backward_raises_clear_error(name):
    ours_fn, _, options = LOSSES[name]
    x, y = make_pair((5,), torch.float64, "cpu")
    x.requires_grad_()
    # A silently-zero second derivative (e.g. in a gradient penalty) would be wrong: refuse.
    with pytest.raises(RuntimeError, match="double backward .* is not supported"):
        torch.autograd.grad(ours_fn(x, y, **options), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.gradgradcheck(lambda a: ours_fn(a, y, **options), (x,))


def saved_bytes(fn):
    """Bytes autograd keeps for backward while fn() runs (through saved-tensor hooks)."""
    total = []

    def pack(tensor):
        total.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(total), out


@pytest.mark.parametrize("name", LOSSES)
def test_backward_keeps_only_the_gradient(name):
    ours_fn, _, options = LOSSES[name]
    x, y = make_pair((1000,), torch.float32, "cpu")
    x.requires_grad_()
    nbytes, _ = saved_bytes(lambda: ours_fn(x, y, **options))
    # One float32 gradient (and a 0-d backward scale when reduced); no input, target or temporaries.
    assert nbytes - 1000 * 4 in (0, 4)
    with torch.no_grad():
        nbytes, out = saved_bytes(lambda: ours_fn(x, y, **options))
    assert nbytes == 0 and out.grad_fn is None


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"])
def test_opcheck(name, requires_grad, device):
    op = getattr(torch.ops.fusedloss, name)
    x, y = make_pair((4, 3), torch.float32, device)
    x.requires_grad_(requires_grad)
    extra = {"huber_loss": [0.5], "smooth_l1_loss": [0.5]}.get(name, [])
    for reduction in REDUCTIONS:
        torch.library.opcheck(op, (x, y, reduction, *extra))
    torch.library.opcheck(op, (x, y[0], "mean", *extra))  # broadcast


def test_internal_forward_needs_input_gradient_for_target_gradient():
    x, y = make_pair((3,), torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="compute_target_grad needs compute_grad"):
        torch.ops.fusedloss._hinge_loss_forward(x, y, 1.0, False, "sum", False, True)


def test_opcheck_internal_forward(device):
    x, y = make_pair((4, 3), torch.float32, device)
    for compute_grad in (False, True):
        torch.library.opcheck(torch.ops.fusedloss._huber_loss_forward,
                              (x, y, "sum", 0.5, compute_grad, False))
    for reduction in ("mean", "none"):
        torch.library.opcheck(torch.ops.fusedloss._binary_cross_entropy_with_logits_forward,
                              (x, y.sigmoid(), None, torch.rand(3, device=device), reduction,
                               True, True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_scale_gradient(dtype, device):
    gradient = torch.randn(5, 7, device=device, dtype=dtype)
    grad_output = torch.tensor(3.0, device=device, dtype=dtype)
    scale = torch.tensor(0.25, device=device)
    torch.library.opcheck(torch.ops.fusedloss._scale_gradient_, (gradient, grad_output, scale))
    expected = (gradient.float() * 3.0 * 0.25).to(dtype)
    torch.ops.fusedloss._scale_gradient_(gradient, grad_output, scale)
    assert torch.equal(gradient, expected)


def test_scale_gradient_holds_a_scale_below_half_precision(device):
    # 1/2**26 is 0 in float16: the product must be formed in float, not in the gradient's dtype.
    gradient = torch.full((1000,), 2.0**10, device=device, dtype=torch.float16)
    one = torch.tensor(1.0, device=device, dtype=torch.float16)
    torch.ops.fusedloss._scale_gradient_(gradient, one, torch.tensor(2.0**-26, device=device))
    assert torch.all(gradient == torch.tensor(2.0**-16, dtype=torch.float16, device=device))


@pytest.mark.parametrize("name", LOSSES)
def test_torch_compile_fullgraph(name, device):
    torch._dynamo.reset()  # each case compiles the same lambda: keep under the recompile limit
    ours_fn, torch_fn, options = LOSSES[name]
    compiled = torch.compile(
        lambda a, b: ours_fn(a, b, reduction="mean", **options), fullgraph=True, backend="aot_eager"
    )
    x, y = make_pair((8, 5), torch.float32, device)
    x.requires_grad_()
    out = compiled(x, y)
    out.backward()
    xr = x.detach().clone().requires_grad_()
    expected = torch_fn(xr, y, **options)
    expected.backward()
    assert_close(out, expected)
    assert_close(x.grad, xr.grad)


def test_torch_compile_inductor_dynamic_shapes():
    compiled = torch.compile(FL.mse_loss, fullgraph=True, dynamic=True)
    for n in (5, 9):
        x, y = make_pair((n, 3), torch.float32, "cpu")
        x.requires_grad_()
        out = compiled(x, y)
        out.backward()
        xr = x.detach().clone().requires_grad_()
        F.mse_loss(xr, y).backward()
        assert_close(out, F.mse_loss(x.detach(), y))
        assert_close(x.grad, xr.grad)


def test_legacy_size_average_and_reduce():
    x, y = make_pair((4, 3), torch.float32, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn, ref in [(FL.mse_loss, F.mse_loss), (FL.l1_loss, F.l1_loss),
                        (FL.smooth_l1_loss, F.smooth_l1_loss)]:
            for size_average, reduce in [(False, None), (None, False), (True, True)]:
                assert_close(fn(x, y, size_average, reduce), ref(x, y, size_average, reduce))


@pytest.mark.skipif("weight" not in F.mse_loss.__code__.co_varnames,
                    reason="this torch has no weight= on the regression losses (added in 2.10)")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weight_argument_matches_torch(reduction):
    x, y = make_pair((4, 3), torch.float64, "cpu")
    w = torch.rand(4, 3, dtype=torch.float64)
    for fn, ref in [(FL.mse_loss, F.mse_loss), (FL.l1_loss, F.l1_loss),
                    (FL.huber_loss, F.huber_loss)]:
        xs = [x.clone().requires_grad_() for _ in range(2)]
        ws = [w.clone().requires_grad_() for _ in range(2)]
        ours = fn(xs[0], y, reduction=reduction, weight=ws[0])
        expected = ref(xs[1], y, reduction=reduction, weight=ws[1])
        assert_close(ours, expected)
        ours.sum().backward()
        expected.sum().backward()
        assert_close(xs[0].grad, xs[1].grad)
        assert_close(ws[0].grad, ws[1].grad)
    with pytest.raises(ValueError, match="same size"):
        FL.mse_loss(x, y, weight=w[0])


# ---- bad input: torch's exception type, a message that names the argument and the values ----

def test_unknown_reduction_is_value_error():
    x, y = make_pair((3,), torch.float32, "cpu")
    for op in ("mse_loss", "l1_loss"):
        with pytest.raises(ValueError, match=r"fusedloss\.\w+: reduction must be 'none', 'mean' or 'sum', got 'avg'"):
            getattr(torch.ops.fusedloss, op)(x, y, "avg")
    with pytest.raises(ValueError, match="reduction"):
        FL.huber_loss(x, y, reduction="avg")


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan")])
def test_huber_non_positive_delta(delta):
    x, y = make_pair((3,), torch.float32, "cpu")
    with pytest.raises(RuntimeError, match=r"huber_loss: delta must be positive, got"):
        FL.huber_loss(x, y, delta=delta)


@pytest.mark.parametrize("beta", [-0.1, float("nan")])
def test_smooth_l1_negative_beta(beta):
    x, y = make_pair((3,), torch.float32, "cpu")
    with pytest.raises(RuntimeError, match=r"smooth_l1_loss: beta must be non-negative, got"):
        FL.smooth_l1_loss(x, y, beta=beta)


def test_integer_inputs_are_not_implemented_like_torch():
    x = torch.arange(6)
    with pytest.raises(NotImplementedError, match=r"float32, float64, float16 or bfloat16, got input Long and target Long"):
        FL.mse_loss(x, x)
    with pytest.raises(NotImplementedError):
        F.mse_loss(x, x)  # torch refuses too


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(RuntimeError, match=r"input and target of shapes \[3, 2\] and \[4\] are not broadcastable"):
        torch.ops.fusedloss.mse_loss(torch.randn(3, 2), torch.randn(4), "mean")


def test_device_mismatch_is_clear():
    with pytest.raises(RuntimeError, match="same device, got input on meta and target on cpu"):
        FL.l1_loss(torch.randn(3, device="meta"), torch.randn(3))


# ---- determinism ----

@pytest.mark.parametrize("name", LOSSES)
def test_bitwise_deterministic_across_runs_and_thread_counts(name, device):
    ours_fn, _, options = LOSSES[name]
    x, y = make_pair((1_000_003,), torch.float32, device)
    assert_bitwise_deterministic(lambda xg: ours_fn(xg, y, **options), x)


# ---- modules ----

@pytest.mark.parametrize(
    "ours_cls, torch_cls, kwargs",
    [
        (fusedloss.nn.MSELoss, torch.nn.MSELoss, {"reduction": "sum"}),
        (fusedloss.nn.L1Loss, torch.nn.L1Loss, {}),
        (fusedloss.nn.HuberLoss, torch.nn.HuberLoss, {"delta": 0.3, "reduction": "none"}),
        (fusedloss.nn.SmoothL1Loss, torch.nn.SmoothL1Loss, {"beta": 2.0}),
    ],
)
def test_modules_are_drop_in(ours_cls, torch_cls, kwargs):
    ours, reference = ours_cls(**kwargs), torch_cls(**kwargs)
    assert isinstance(ours, torch_cls)
    x, y = make_pair((6, 2), torch.float32, "cpu")
    assert_close(ours(x, y), reference(x, y))
    assert repr(ours) == repr(reference)


# ---- backward reuses the saved gradient in place only when the graph is freed ----

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_backward_twice_with_retain_graph(name, reduction):
    ours_fn, torch_fn, options = LOSSES[name]
    x, y = make_pair((64,), torch.float32, "cpu")
    grads = []
    for fn in (ours_fn, torch_fn):
        xg = x.clone().requires_grad_()
        yg = y.clone().requires_grad_()
        loss = fn(xg, yg, reduction=reduction, **options)
        grad_output = torch.full_like(loss, 0.5)
        first = torch.autograd.grad(loss, (xg, yg), grad_output, retain_graph=True)
        loss.backward(grad_output * 3, retain_graph=True)
        loss.backward(grad_output)
        grads.append((*first, xg.grad, yg.grad))
    for ours, expected in zip(*grads):
        assert_close(ours, expected)


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_flows_into_the_graph_before_the_loss(name):
    ours_fn, torch_fn, options = LOSSES[name]
    x, y = make_pair((300,), torch.float32, "cpu")
    weights = []
    for fn in (ours_fn, torch_fn):
        w = torch.full((300,), 0.7, requires_grad=True)
        loss = fn((x * w).tanh(), y, **options) * 2.5
        loss.backward()
        weights.append(w.grad)
    assert_close(*weights)


def test_gradient_buffer_becomes_input_grad_without_copy():
    # With a plain loss.backward() the fused forward's gradient buffer is handed to x.grad.
    x, y = make_pair((1 << 20,), torch.float32, "cpu")
    x.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.data_ptr()) or t,
                                                  lambda t: t):
        loss = FL.mse_loss(x, y)
    loss.backward()
    assert x.grad.data_ptr() == saved[0]
    expected = 2 * (x.detach() - y) / x.numel()
    assert_close(x.grad, expected)
    x.grad.resize_(10)  # an ordinary, resizable tensor (our allocator backs it)


def test_replace_losses_switches_a_module_tree_in_place():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(3, 2)
            self.criteria = torch.nn.ModuleList(
                [torch.nn.HuberLoss(delta=0.3), torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0, 1.0]))])

    model = Model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert fusedloss.nn.replace_losses(model) is model
    huber, bce = model.criteria
    assert type(huber) is fusedloss.nn.HuberLoss and huber.delta == 0.3
    assert type(bce) is fusedloss.nn.BCEWithLogitsLoss
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    x, t = torch.randn(4, 2), torch.rand(4, 2)
    assert_close(bce(x, t), F.binary_cross_entropy_with_logits(x, t, pos_weight=torch.tensor([2.0, 1.0])))
    assert type(fusedloss.nn.replace_losses(torch.nn.MSELoss())) is fusedloss.nn.MSELoss


@pytest.mark.parametrize("name", LOSSES)
def test_many_threads_give_the_results_of_one(name, device):
    from concurrent.futures import ThreadPoolExecutor

    ours_fn, _, options = LOSSES[name]
    x, y = make_pair((200_003,), torch.float32, device)

    def run(_):
        xg = x.clone().requires_grad_()
        loss = ours_fn(xg, y, **options)
        loss.backward()
        return loss, xg.grad

    expected = run(None)
    with ThreadPoolExecutor(8) as pool:
        for loss, grad in pool.map(run, range(32)):
            assert torch.equal(loss, expected[0]) and torch.equal(grad, expected[1])


def test_loading_into_another_torch_version_names_both(monkeypatch):
    built_against = torch.ops.fusedloss._build_info()[1]
    monkeypatch.setattr(torch, "__version__", "1.0.0+other")
    with pytest.raises(ImportError, match=rf"compiled against torch {built_against} but torch 1.0.0\+other is running"):
        fusedloss._library.load()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"])
def test_gradient_larger_than_the_cache_is_streamed(name, dtype):
    # From 32 MiB on, the CPU writes the input gradient with non-temporal stores from a buffer:
    # just past it, with a tail that is not a whole 16-byte store, every element must be there.
    n = (32 << 20) // (torch.finfo(dtype).bits // 8) + 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g).to(dtype).requires_grad_()
    t = torch.randn(n, generator=g).to(dtype)
    getattr(fusedloss.functional, name)(x, t, reduction="sum").backward()
    xr = x.detach().double().requires_grad_()
    getattr(F, name)(xr, t.double(), reduction="sum").backward()
    assert_close(x.grad, xr.grad.to(dtype), dtype)
    assert x.grad[-5:].ne(0).all()  # the tail, written by plain stores after the streamed body

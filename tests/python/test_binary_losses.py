"""Binary classification and margin losses against their oracles (torch.nn.functional, and the
formulas of torchvision's focal loss and of the binary SVM in plain torch ops): values and
gradients over shapes, dtypes, reductions, weights and extreme inputs, plus gradcheck, opcheck,
torch.compile and bad input."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from deferred import raises
from tolerances import DTYPES, assert_bitwise_deterministic, assert_close

FL = fusedloss.functional
REDUCTIONS = ["none", "mean", "sum"]
SHAPES = [(), (0,), (7,), (3, 5), (2, 3, 4), (1029,)]


def _reduce(loss, reduction):
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def focal_reference(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss, written out."""
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def hinge_reference(input, target, margin=1.0, squared=False, reduction="mean"):
    loss = (margin - target * input).clamp_min(0)
    return _reduce(loss * loss if squared else loss, reduction)


def soft_margin_reference(input, target, reduction="mean"):
    """log(1 + exp(-t x)) without overflow (torch's own form overflows for t x < -88)."""
    return _reduce(torch.logaddexp(torch.zeros_like(input), -target * input), reduction)


# name -> (ours, oracle, options, input kind, target kind, target gradient: "yes" | "no" | "error")
LOSSES = {
    "binary_cross_entropy": (FL.binary_cross_entropy, F.binary_cross_entropy, {}, "prob", "soft", "yes"),
    "bce_with_logits": (FL.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, {}, "logit", "soft", "yes"),
    "bce_with_logits_pos_weight": (FL.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, {"pos_weight": "per_class"}, "logit", "soft", "yes"),
    "sigmoid_focal_loss": (FL.sigmoid_focal_loss, focal_reference, {}, "logit", "soft", "yes"),
    "sigmoid_focal_loss_gamma0_noalpha": (FL.sigmoid_focal_loss, focal_reference, {"alpha": -1.0, "gamma": 0.0}, "logit", "soft", "yes"),
    "sigmoid_focal_loss_gamma1.5": (FL.sigmoid_focal_loss, focal_reference, {"alpha": 0.6, "gamma": 1.5}, "logit", "hard", "yes"),
    "soft_margin_loss": (FL.soft_margin_loss, F.soft_margin_loss, {}, "logit", "sign", "error"),
    "hinge_embedding_loss": (FL.hinge_embedding_loss, F.hinge_embedding_loss, {"margin": 0.7}, "logit", "sign", "no"),
    "hinge_loss": (FL.hinge_loss, hinge_reference, {"margin": 0.8}, "logit", "sign", "yes"),
    "hinge_loss_squared": (FL.hinge_loss, hinge_reference, {"margin": 1.0, "squared": True}, "logit", "sign", "yes"),
    "poisson_nll_loss": (FL.poisson_nll_loss, F.poisson_nll_loss, {}, "logit", "count", "yes"),
    # full: counts from 1 (torch's own target gradient is NaN at 0 there: 0 * log 0)
    "poisson_nll_loss_rate_full": (FL.poisson_nll_loss, F.poisson_nll_loss,
                                   {"log_input": False, "full": True, "eps": 1e-6}, "rate", "count1", "yes"),
    # input: any reals stand for log-probabilities (the formula does not need them normalized)
    "kl_div": (FL.kl_div, F.kl_div, {}, "logit", "soft", "yes"),
    "kl_div_log_target": (FL.kl_div, F.kl_div, {"log_target": True}, "logit", "logsoft", "yes"),
    # input1 and input2 take the input and target places; the +-1 labels are an option
    "margin_ranking_loss": (FL.margin_ranking_loss, F.margin_ranking_loss, {"margin": 0.3, "target": "labels"},
                            "logit", "normal", "yes"),
    "multilabel_soft_margin_loss": (FL.multilabel_soft_margin_loss, F.multilabel_soft_margin_loss,
                                    {"weight": "per_class"}, "logit", "hard", "yes"),
    # input and target (its gradient: minus the input's); var an option (its gradient: below)
    "gaussian_nll_loss": (FL.gaussian_nll_loss, F.gaussian_nll_loss, {"var": "positive"}, "logit", "normal", "yes"),
    "gaussian_nll_loss_full_per_sample": (FL.gaussian_nll_loss, F.gaussian_nll_loss,
                                          {"var": "per_sample", "full": True}, "logit", "normal", "yes"),
}
# Losses over a class dimension: a 0-d input is an IndexError (as torch's).
CLASS_DIM_LOSSES = {"multilabel_soft_margin_loss"}


def make_inputs(name, shape, dtype, device, seed=0):
    _, _, _, input_kind, target_kind, _ = LOSSES[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    if input_kind == "prob":
        x = torch.sigmoid(x)
    elif input_kind == "rate":
        x = torch.exp(x / 3)
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    t = {"soft": u, "hard": (u > 0.5).double(), "sign": (u > 0.5).double() * 2 - 1,
         "count": torch.floor(u * 6), "count1": torch.floor(u * 6) + 1, "logsoft": torch.log(u),
         "normal": torch.randn(shape, generator=g, dtype=torch.float64) * 3}[target_kind]
    return x.to(dtype).to(device), t.to(dtype).to(device)


def resolve_options(options, shape, dtype, device):
    """Turns the symbolic weights of the table into tensors for this shape."""
    out = dict(options)
    if out.get("pos_weight") == "per_class":
        classes = shape[-1] if len(shape) else 1
        values = (torch.arange(classes, dtype=torch.float64) % 7) * 0.5 + 0.5
        out["pos_weight"] = (values if len(shape) else values[0]).to(dtype).to(device)
    if out.get("weight") == "per_class":
        classes = shape[-1] if len(shape) else 1
        out["weight"] = ((torch.arange(classes, dtype=torch.float64) % 5) * 0.3 + 0.4).to(dtype).to(device)
    if out.get("var") in ("positive", "per_sample"):
        g = torch.Generator().manual_seed(12)
        var_shape = shape if out["var"] == "positive" else shape[:-1]
        out["var"] = (torch.rand(var_shape, generator=g, dtype=torch.float64) * 2 + 0.05).to(dtype).to(device)
    if out.get("target") == "labels":
        g = torch.Generator().manual_seed(11)
        out["target"] = ((torch.rand(shape, generator=g) > 0.5).double() * 2 - 1).to(dtype).to(device)
    return out


def check_against_oracle(name, x, t, reduction, options=None, target_grad=True):
    """Ours against the oracle on the same inputs. For float16/bfloat16 the oracle runs in
    float64 on those (already rounded) inputs: torch computes some of these losses in half
    precision itself (BCE-with-logits is off by up to 76% there), so it is no oracle at that
    precision; its answer is rounded to the dtype (overflowing to inf where it must) and both
    sides are compared at the dtype's tolerance."""
    ours_fn, oracle, table_options, _, _, target_rule = LOSSES[name]
    dtype = x.dtype
    oracle_dtype = torch.float64 if dtype in (torch.float16, torch.bfloat16) else dtype
    options = options if options is not None else resolve_options(table_options, x.shape, dtype, x.device)
    wants_target = target_grad and target_rule == "yes"
    xs = [x.detach().clone().to(d).requires_grad_() for d in (dtype, oracle_dtype)]
    ts = [t.detach().clone().to(d).requires_grad_(wants_target) for d in (dtype, oracle_dtype)]
    ours = ours_fn(xs[0], ts[0], reduction=reduction, **options)
    oracle_options = {k: v.to(oracle_dtype) if torch.is_tensor(v) else v for k, v in options.items()}
    expected = oracle(xs[1], ts[1], reduction=reduction, **oracle_options)
    assert ours.shape == expected.shape and ours.dtype == dtype
    def rounded(v):
        return v.detach().to(dtype).to(oracle_dtype)

    assert_close(ours.to(oracle_dtype), rounded(expected), dtype=dtype, msg=f"{name} value")
    grad_output = torch.rand_like(expected) + 0.5
    ours.backward(grad_output.to(dtype))
    expected.backward(grad_output.to(dtype).to(oracle_dtype))
    assert_close(xs[0].grad.to(oracle_dtype), rounded(xs[1].grad), dtype=dtype, msg=f"{name} grad input")
    if wants_target:
        assert_close(ts[0].grad.to(oracle_dtype), rounded(ts[1].grad), dtype=dtype, msg=f"{name} grad target")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_matches_oracle(name, reduction, dtype, shape, device):
    x, t = make_inputs(name, shape, dtype, device)
    if shape == () and name in CLASS_DIM_LOSSES:
        for fn in LOSSES[name][:2]:
            with pytest.raises(IndexError):
                fn(x, t, reduction=reduction)
        return
    check_against_oracle(name, x, t, reduction)


@pytest.mark.parametrize("name", LOSSES)
def test_large_input_spans_many_chunks(name, device):
    x, t = make_inputs(name, (300_007,), torch.float32, device)
    for reduction in REDUCTIONS:
        check_against_oracle(name, x, t, reduction)


@pytest.mark.parametrize("name", LOSSES)
def test_non_contiguous_inputs(name, device):
    x, t = make_inputs(name, (6, 8, 10), torch.float64, device)
    check_against_oracle(name, x.transpose(0, 2), t.transpose(0, 2), "none")
    check_against_oracle(name, x[:, ::2, 1:], t[:, 1::2, :-1], "sum")


@pytest.mark.parametrize(
    "weight_shape", [(3, 5), (5,), (1, 5), (), (3, 1)], ids=["full", "per_class", "1xC", "scalar", "per_sample"]
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_weight_shapes(weight_shape, reduction, device):
    x, t = make_inputs("binary_cross_entropy", (3, 5), torch.float64, device)
    weight = torch.rand(weight_shape, dtype=torch.float64, device=device) + 0.5
    check_against_oracle("binary_cross_entropy", x, t, reduction, {"weight": weight})


@pytest.mark.parametrize("shape", [(3, 5), (4, 700)], ids=["small", "classes_longer_than_a_block"])
@pytest.mark.parametrize("pos_weight_shape", ["full", "per_class", "1xC", "scalar"])
@pytest.mark.parametrize("weight_shape", [None, "full", "per_class", "per_sample"])
def test_bce_with_logits_weight_and_pos_weight_shapes(shape, pos_weight_shape, weight_shape, device):
    x, t = make_inputs("bce_with_logits", shape, torch.float64, device)
    n, c = shape
    shapes = {"full": (n, c), "per_class": (c,), "1xC": (1, c), "scalar": (), "per_sample": (n, 1)}
    g = torch.Generator().manual_seed(3)
    options = {"pos_weight": torch.rand(shapes[pos_weight_shape], generator=g, dtype=torch.float64).to(device) * 3}
    if weight_shape:
        options["weight"] = torch.rand(shapes[weight_shape], generator=g, dtype=torch.float64).to(device) + 0.2
    for reduction in REDUCTIONS:
        check_against_oracle("bce_with_logits", x, t, reduction, options)


def test_bce_probabilities_exactly_zero_and_one(device):
    x = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.5, 1e-30], dtype=torch.float64, device=device)
    t = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.3, 0.5], dtype=torch.float64, device=device)
    # The loss is clamped at 100 per term; d/d(input) divides by max(x (1 - x), 1e-12) as torch.
    # torch's target gradient is infinite at 0 and 1 (unclamped logs): the same here.
    for reduction in REDUCTIONS:
        check_against_oracle("binary_cross_entropy", x, t, reduction, {})


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["bce_with_logits", "bce_with_logits_pos_weight", "sigmoid_focal_loss"])
def test_extreme_logits(name, dtype, device):
    # Logits of +-100 and +-1e4 (float16: +-1e4 is representable, and exp of it overflows).
    x = torch.tensor([-1e4, -100.0, -30.0, -5.0, 0.0, 5.0, 30.0, 100.0, 1e4], device=device).to(dtype)
    t = torch.tensor([0.0, 1.0, 0.3, 1.0, 0.5, 0.0, 0.7, 0.0, 1.0], device=device).to(dtype)
    ours_fn, oracle, table_options, *_ = LOSSES[name]
    options = resolve_options(table_options, x.shape, torch.float64, device)
    xs, ts = x.clone().requires_grad_(), t.clone().requires_grad_()
    ours = ours_fn(xs, ts, reduction="none", **{k: v.to(dtype) for k, v in options.items()})
    # The oracle in float64, where torch's own formulas do not overflow.
    x64, t64 = x.double().requires_grad_(), t.double().requires_grad_()
    expected = oracle(x64, t64, reduction="none", **options)
    assert torch.isfinite(ours).all()
    assert_close(ours.double(), expected.detach(), dtype=dtype)
    ours.sum().backward()
    expected.sum().backward()
    assert torch.isfinite(xs.grad).all() and torch.isfinite(ts.grad).all()
    assert_close(xs.grad.double(), x64.grad, dtype=dtype)
    assert_close(ts.grad.double(), t64.grad, dtype=dtype)


def test_focal_with_gamma_0_and_no_alpha_is_bce_with_logits():
    x, t = make_inputs("sigmoid_focal_loss", (50,), torch.float64, "cpu")
    assert_close(FL.sigmoid_focal_loss(x, t, alpha=-1, gamma=0, reduction="mean"),
                 F.binary_cross_entropy_with_logits(x, t))


@pytest.mark.parametrize("name", ["binary_cross_entropy", "bce_with_logits", "sigmoid_focal_loss"])
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_all_zero_and_all_one_targets(name, fill, device):
    x, _ = make_inputs(name, (64,), torch.float32, device)
    check_against_oracle(name, x, torch.full_like(x, fill), "mean")


def test_soft_margin_large_margins_do_not_overflow(device):
    x = torch.tensor([-100.0, -90.0, 0.0, 90.0, 100.0], device=device)
    t = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0], device=device)
    xs = x.clone().requires_grad_()
    loss = FL.soft_margin_loss(xs, t, reduction="none")
    # torch gives inf for the first two (log1p(exp(100)) in float32); the true values are ~100, 90.
    assert_close(loss, soft_margin_reference(x.double(), t.double(), "none").float())
    loss.sum().backward()
    assert torch.isfinite(xs.grad).all()


def test_hinge_embedding_with_other_target_values_and_kink_matches_torch():
    # torch adds both branches for a target that is neither 1 nor -1; so do we. Last: at the kink.
    x = torch.tensor([0.3, -2.0, 0.5, 1.5, 0.7], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    check_against_oracle("hinge_embedding_loss", x, t, "none")


@pytest.mark.parametrize("squared", [False, True])
def test_hinge_at_the_margin_has_torch_clamp_subgradient(squared):
    x = torch.tensor([0.8, -0.8, 0.0], dtype=torch.float64)
    t = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    check_against_oracle("hinge_loss_squared" if squared else "hinge_loss", x, t, "sum")


# ---- gradients: gradcheck, target-gradient rules, double backward, saved bytes ----

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_gradcheck_float64(name, reduction):
    ours_fn, _, table_options, _, _, target_rule = LOSSES[name]
    x, t = make_inputs(name, (4, 3), torch.float64, "cpu")
    if name.startswith("hinge"):  # keep finite differences off the kinks
        margin = table_options.get("margin", 1.0)
        x = torch.where(((margin - t * x).abs() < 0.05) | ((margin - x).abs() < 0.05), x + 0.2, x)
    options = resolve_options(table_options, x.shape, x.dtype, "cpu")
    x.requires_grad_()
    t.requires_grad_(target_rule == "yes" and LOSSES[name][4] == "soft")
    assert torch.autograd.gradcheck(lambda a, b: ours_fn(a, b, reduction=reduction, **options), (x, t))


def test_soft_margin_target_gradient_raises_like_torch():
    x, t = make_inputs("soft_margin_loss", (5,), torch.float64, "cpu")
    t.requires_grad_()
    with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'target'"):
        FL.soft_margin_loss(x.requires_grad_(), t).backward()


def test_hinge_embedding_gives_no_target_gradient_like_torch():
    x, t = make_inputs("hinge_embedding_loss", (5,), torch.float64, "cpu")
    t.requires_grad_()
    FL.hinge_embedding_loss(x.requires_grad_(), t).backward()
    assert t.grad is None and x.grad is not None


@pytest.mark.parametrize("name", LOSSES)
def test_double_backward_raises_clear_error(name):
    ours_fn, _, table_options, *_ = LOSSES[name]
    x, t = make_inputs(name, (5,), torch.float64, "cpu")
    options = resolve_options(table_options, x.shape, x.dtype, "cpu")
    x.requires_grad_()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(ours_fn(x, t, reduction="sum", **options), x, create_graph=True)


@pytest.mark.parametrize("name", LOSSES)
def test_backward_keeps_only_the_gradients(name):
    ours_fn, _, table_options, _, _, target_rule = LOSSES[name]
    x, t = make_inputs(name, (1000,), torch.float32, "cpu")
    options = resolve_options(table_options, x.shape, x.dtype, "cpu")
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda v: sizes.append(v.numel() * v.element_size()) or v, lambda v: v):
        ours_fn(x.requires_grad_(), t, **options)
    # The input gradient only (the target does not require grad), and a 0-d backward scale when
    # the loss is reduced.
    assert sum(sizes) - 4000 in (0, 4)


@pytest.mark.parametrize("name", LOSSES)
def test_bitwise_deterministic_across_runs_and_thread_counts(name, device):
    ours_fn, _, table_options, *_ = LOSSES[name]
    x, t = make_inputs(name, (1_000_003,), torch.float32, device)
    options = resolve_options(table_options, x.shape, x.dtype, device)
    assert_bitwise_deterministic(lambda xg: ours_fn(xg, t, reduction="mean", **options), x)


# ---- operator checks ----

OPS = {
    "binary_cross_entropy": lambda x, t, r: (x, t, None, r),
    "binary_cross_entropy_with_logits": lambda x, t, r: (x, t, torch.rand_like(x), torch.rand(x.shape[-1], device=x.device), r),
    "sigmoid_focal_loss": lambda x, t, r: (x, t, 0.25, 2.0, r),
    "soft_margin_loss": lambda x, t, r: (x, t, r),
    "hinge_embedding_loss": lambda x, t, r: (x, t, 0.5, r),
    "hinge_loss": lambda x, t, r: (x, t, 1.0, True, r),
    "poisson_nll_loss": lambda x, t, r: (x, t, False, True, 1e-8, r),
    "kl_div": lambda x, t, r: (x, t, r, False),
    "margin_ranking_loss": lambda x, t, r: (x, t, torch.ones_like(x).neg_(), 0.2, r),
    "multilabel_soft_margin_loss": lambda x, t, r: (x, t, torch.rand(x.shape[-1], device=x.device), r),
    "gaussian_nll_loss": lambda x, t, r: (x, t, torch.rand(x.shape[0], device=x.device) + 0.1, True, 1e-6, r),
}


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("op_name", OPS)
def test_opcheck(op_name, requires_grad, device):
    x = torch.rand(4, 3, device=device)
    t = torch.randint(0, 2, (4, 3), device=device).float()
    if op_name in ("soft_margin_loss", "hinge_embedding_loss", "hinge_loss"):
        t = t * 2 - 1
    x.requires_grad_(requires_grad)
    for reduction in REDUCTIONS:
        torch.library.opcheck(getattr(torch.ops.fusedloss, op_name), OPS[op_name](x, t, reduction))


@pytest.mark.parametrize("name", LOSSES)
def test_torch_compile_fullgraph(name, device):
    torch._dynamo.reset()  # each case compiles the same lambda: keep under the recompile limit
    ours_fn, oracle, table_options, *_ = LOSSES[name]
    x, t = make_inputs(name, (8, 5), torch.float32, device)
    options = resolve_options(table_options, x.shape, x.dtype, device)
    compiled = torch.compile(lambda a, b: ours_fn(a, b, reduction="mean", **options), fullgraph=True, backend="aot_eager")
    xs = x.clone().requires_grad_()
    out = compiled(xs, t)
    out.backward()
    xr = x.clone().requires_grad_()
    expected = oracle(xr, t, reduction="mean", **options)
    expected.backward()
    assert_close(out, expected)
    assert_close(xs.grad, xr.grad)


# ---- bad input ----

@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_bce_input_outside_unit_interval(bad, device):
    x = torch.tensor([0.2, bad, 0.9], device=device)
    with raises(RuntimeError, match="all elements of input should be between 0 and 1; 1 of 3"):
        FL.binary_cross_entropy(x, torch.ones(3, device=device))


def test_hinge_labels_other_than_plus_minus_one(device):
    x = torch.randn(6, device=device)
    t = torch.tensor([1.0, -1.0, 0.0, 1.0, 2.0, -1.0], device=device)
    with raises(ValueError, match="only the labels -1 and 1; 2 of 6.*position 2"):
        FL.hinge_loss(x, t)


def test_bce_shape_mismatch_is_value_error_like_torch():
    with pytest.raises(ValueError, match="different to the input size"):
        FL.binary_cross_entropy(torch.rand(3), torch.rand(3, 1))
    with pytest.raises(ValueError, match="must be the same as input size"):
        FL.binary_cross_entropy_with_logits(torch.rand(3), torch.rand(1))
    with pytest.raises(ValueError, match=r"target of shape \[3, 1\] must have the same shape as input of shape \[3\]"):
        torch.ops.fusedloss.binary_cross_entropy(torch.rand(3), torch.rand(3, 1), None, "mean")


def test_weight_that_does_not_broadcast_names_it():
    x, t = torch.rand(4, 3), torch.rand(4, 3)
    with pytest.raises(RuntimeError, match="weight of shapes"):
        FL.binary_cross_entropy(x, t, weight=torch.rand(4))
    with pytest.raises(RuntimeError, match="pos_weight of shapes"):
        FL.binary_cross_entropy_with_logits(x, t, pos_weight=torch.rand(2))


def test_weight_requiring_grad_is_refused_like_torch():
    x, t = torch.rand(4, 3, requires_grad=True), torch.rand(4, 3)
    with pytest.raises(RuntimeError, match="derivative for 'weight' is not implemented"):
        FL.binary_cross_entropy(x, t, weight=torch.rand(3, requires_grad=True))
    with pytest.raises(RuntimeError, match="derivative for 'pos_weight' is not implemented"):
        FL.binary_cross_entropy_with_logits(x, t, pos_weight=torch.rand(3, requires_grad=True))


@pytest.mark.parametrize("kwargs, match", [
    ({"gamma": -1.0}, "gamma must be >= 0"),
    ({"gamma": float("nan")}, "gamma must be >= 0"),
    ({"alpha": 1.5}, "alpha must be in"),
])
def test_focal_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FL.sigmoid_focal_loss(torch.randn(3), torch.rand(3), **kwargs)


# ---- modules ----

@pytest.mark.parametrize(
    "ours_cls, torch_cls, kwargs",
    [
        (fusedloss.nn.BCELoss, torch.nn.BCELoss, {"weight": torch.rand(2)}),
        (fusedloss.nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss, {"pos_weight": torch.rand(2) + 1}),
        (fusedloss.nn.SoftMarginLoss, torch.nn.SoftMarginLoss, {"reduction": "sum"}),
        (fusedloss.nn.HingeEmbeddingLoss, torch.nn.HingeEmbeddingLoss, {"margin": 0.4}),
        (fusedloss.nn.PoissonNLLLoss, torch.nn.PoissonNLLLoss, {"log_input": False, "full": True}),
        (fusedloss.nn.KLDivLoss, torch.nn.KLDivLoss, {"reduction": "batchmean", "log_target": True}),
        (fusedloss.nn.MultiLabelSoftMarginLoss, torch.nn.MultiLabelSoftMarginLoss, {"weight": torch.rand(2)}),
    ],
)
def test_modules_are_drop_in(ours_cls, torch_cls, kwargs):
    ours, reference = ours_cls(**kwargs), torch_cls(**kwargs)
    assert isinstance(ours, torch_cls)
    x = torch.rand(6, 2)
    t = torch.rand(6, 2).round() * 2 - 1 if torch_cls in (torch.nn.SoftMarginLoss, torch.nn.HingeEmbeddingLoss) else torch.rand(6, 2)
    assert_close(ours(x, t), reference(x, t))
    assert_close(torch.jit.script(ours)(x, t), reference(x, t))


def test_focal_and_hinge_modules():
    x, t = make_inputs("sigmoid_focal_loss", (6, 2), torch.float32, "cpu")
    module = fusedloss.nn.SigmoidFocalLoss(alpha=0.3, gamma=1.0, reduction="mean")
    assert_close(module(x, t), focal_reference(x, t, 0.3, 1.0, "mean"))
    assert_close(torch.jit.script(module)(x, t), focal_reference(x, t, 0.3, 1.0, "mean"))
    x, t = make_inputs("hinge_loss", (6, 2), torch.float32, "cpu")
    module = fusedloss.nn.HingeLoss(margin=0.5, squared=True)
    assert_close(module(x, t), hinge_reference(x, t, 0.5, True))
    assert_close(torch.jit.script(module)(x, t), hinge_reference(x, t, 0.5, True))


def test_torch_compile_inductor_with_weights():
    # Inductor (not only aot_eager) around an op with optional tensor arguments.
    torch._dynamo.reset()
    pos_weight = torch.rand(5) + 0.5
    compiled = torch.compile(lambda a, b: FL.binary_cross_entropy_with_logits(a, b, pos_weight=pos_weight), fullgraph=True)
    x, t = make_inputs("bce_with_logits", (8, 5), torch.float32, "cpu")
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = compiled(xs, t)
    out.backward()
    expected = F.binary_cross_entropy_with_logits(xr, t, pos_weight=pos_weight)
    expected.backward()
    assert_close(out, expected)
    assert_close(xs.grad, xr.grad)


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("shape", [(), (6,), (4, 5), (3, 4, 2), (0, 5), (5, 0)], ids=str)
def test_kl_div_batchmean_divides_by_the_batch_size(shape, log_target, device):
    # 'batchmean': the sum over input.size(0) (the sum for a 0-d input; 0 / 0 = NaN for (0, 5),
    # 0 / 5 = 0 for (5, 0)), the KL divergence per sample, as torch.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(device).requires_grad_()
    u = torch.rand(shape, generator=g, dtype=torch.float64).to(device)
    t = (u.log() if log_target else u).requires_grad_()
    ours = FL.kl_div(x, t, reduction="batchmean", log_target=log_target)
    x2, t2 = x.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
    expected = F.kl_div(x2, t2, reduction="batchmean", log_target=log_target)
    assert_close(ours, expected)
    ours.backward()
    expected.backward()
    assert_close(x.grad, x2.grad)
    assert_close(t.grad, t2.grad)


def test_kl_div_zero_target_and_mean_warning_like_torch():
    # t = 0 contributes 0 (torch's xlogy); its target gradient is NaN there, as torch's (t / t).
    x = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    t = torch.tensor([0.0, 0.5, 0.5], requires_grad=True)
    ours = FL.kl_div(x, t, reduction="sum")
    expected = F.kl_div(x.detach().requires_grad_(), t.detach().requires_grad_(), reduction="sum")
    assert_close(ours, expected)
    ours.backward()
    assert torch.isnan(t.grad[0]) and torch.isfinite(t.grad[1:]).all()
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        FL.kl_div(x, t)
    with pytest.raises(ValueError, match="batchmean|reduction"):
        FL.mse_loss(x, t, reduction="batchmean")  # the other losses have no 'batchmean'


def test_margin_ranking_module_labels_and_its_limits():
    x1, x2 = torch.randn(8, requires_grad=True), torch.randn(8)
    y = torch.tensor([1, -1, 1, 1, -1, -1, 1, -1])  # integer labels, as torch accepts
    ours, reference = fusedloss.nn.MarginRankingLoss(margin=0.5), torch.nn.MarginRankingLoss(margin=0.5)
    assert isinstance(ours, torch.nn.MarginRankingLoss)
    assert_close(ours(x1, x2, y), reference(x1, x2, y))
    assert_close(torch.jit.script(ours)(x1, x2, y), reference(x1, x2, y))
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        FL.margin_ranking_loss(x1, x2, y.view(8, 1))
    # The labels take no gradient here (torch gives one; labels are data in practice).
    with pytest.raises(RuntimeError, match="derivative for 'target' is not implemented"):
        FL.margin_ranking_loss(x1, x2, y.float().requires_grad_())


def test_multilabel_soft_margin_is_one_fused_pass():
    # Per sample the mean over classes of BCE with logits: the one fused kernel, whose gradient
    # is all that is kept for backward.
    x = torch.randn(64, 10, requires_grad=True)
    t = (torch.rand(64, 10) > 0.5).float()
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda v: sizes.append(v.numel()) or v, lambda v: v):
        loss = FL.multilabel_soft_margin_loss(x, t)
    assert sorted(s for s in sizes if s) == [1, 640]  # the gradient and the backward scale
    assert_close(loss, F.multilabel_soft_margin_loss(x, t))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("var_shape", [(6, 4), (6,), (6, 1), (1, 4)], ids=str)
def test_gaussian_nll_var_shapes_and_gradients_of_all_three(var_shape, full, reduction, device):
    # var input-shaped, one per sample (unsqueezed), or with one dimension of size 1; some var
    # below eps (clamped; the gradient passes the clamp, as torch's). Gradients for input, target
    # and var, each asked for alone and all together.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64).to(device)
    t = torch.randn(6, 4, generator=g, dtype=torch.float64).to(device)
    v = torch.rand(var_shape, generator=g, dtype=torch.float64).to(device) + 0.1
    v[..., 0] = 1e-9
    for wanted in [(0, 1, 2), (0,), (1,), (2,)]:
        ours_in = [a.clone().requires_grad_() for a in (x, t, v)]
        ref_in = [a.clone().requires_grad_() for a in (x, t, v)]
        ours = FL.gaussian_nll_loss(*ours_in, full=full, reduction=reduction)
        expected = F.gaussian_nll_loss(*ref_in, full=full, reduction=reduction)
        assert_close(ours, expected)
        grad_output = torch.rand_like(expected)
        ours_grads = torch.autograd.grad(ours, [ours_in[i] for i in wanted], grad_output)
        ref_grads = torch.autograd.grad(expected, [ref_in[i] for i in wanted], grad_output)
        for a, b in zip(ours_grads, ref_grads):
            assert a.shape == b.shape
            assert_close(a, b)


def test_gaussian_nll_gradcheck_var_and_bad_var():
    g = torch.Generator().manual_seed(5)
    x, t = (torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = (torch.rand(5, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: FL.gaussian_nll_loss(a, b, c, full=True), (x, t, v))
    with pytest.raises(ValueError, match="var has negative entry/entries; 1 of 3 elements.*position 1: -1"):
        FL.gaussian_nll_loss(torch.randn(3), torch.randn(3), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="var has negative"):
        FL.gaussian_nll_loss(torch.randn(3), torch.randn(3), -0.5)
    with pytest.raises(ValueError, match=r"var is of incorrect size.*got \[2, 2\]"):
        FL.gaussian_nll_loss(torch.randn(3, 2), torch.randn(3, 2), torch.ones(2, 2))
    # A float var, as torch accepts.
    assert_close(FL.gaussian_nll_loss(x, t, 0.7), F.gaussian_nll_loss(x, t, torch.full_like(x, 0.7)))


def test_gaussian_nll_module_is_drop_in():
    x, t, v = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4, 1) + 0.1
    ours, reference = fusedloss.nn.GaussianNLLLoss(full=True, eps=1e-3), torch.nn.GaussianNLLLoss(full=True, eps=1e-3)
    assert isinstance(ours, torch.nn.GaussianNLLLoss)
    assert_close(ours(x, t, v), reference(x, t, v))
    assert_close(torch.jit.script(ours)(x, t, v), reference(x, t, v))

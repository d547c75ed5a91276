"""Randomized conformance: hypothesis draws shapes, broadcasting, strides, dtypes, reductions and
options for every pointwise op and compares values and gradients with its oracle.

A fixed, derandomized profile runs in CI; FUSEDLOSS_HYPOTHESIS_PROFILE=long runs a longer search.
"""

import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import test_binary_losses as binary
import test_regression_losses as regression
from tolerances import DTYPES

settings.register_profile("ci", max_examples=150, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("FUSEDLOSS_HYPOTHESIS_PROFILE", "ci"))

shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@st.composite
def broadcast_partner(draw, shape):
    """A shape that broadcasts with `shape`: some dimensions set to 1, some leading ones dropped."""
    dims = [1 if draw(st.booleans()) and draw(st.booleans()) else d for d in shape]
    return tuple(dims[draw(st.integers(0, len(dims))):])


@st.composite
def layouts(draw, tensor):
    """The same values, maybe as a non-contiguous view."""
    if tensor.dim() >= 2 and draw(st.booleans()):
        return tensor.transpose(0, 1).contiguous().transpose(0, 1)
    if tensor.dim() >= 1 and draw(st.booleans()):
        doubled = torch.repeat_interleave(tensor, 2, dim=-1)
        return doubled[..., ::2]
    return tensor


@given(data=st.data())
def test_regression_losses(data):
    name = data.draw(st.sampled_from(list(regression.LOSSES)))
    dtype = data.draw(st.sampled_from(DTYPES))
    reduction = data.draw(st.sampled_from(regression.REDUCTIONS))
    shape = data.draw(shapes)
    target_shape = data.draw(broadcast_partner(shape))
    if data.draw(st.booleans()):
        shape, target_shape = target_shape, shape
    x, _ = regression.make_pair(shape, dtype, "cpu", seed=data.draw(st.integers(0, 99)))
    _, y = regression.make_pair(target_shape, dtype, "cpu", seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regression.check_against_torch(name, data.draw(layouts(x)), data.draw(layouts(y)), reduction)


@given(data=st.data())
def test_binary_losses(data):
    name = data.draw(st.sampled_from(list(binary.LOSSES)))
    dtype = data.draw(st.sampled_from(DTYPES))
    reduction = data.draw(st.sampled_from(binary.REDUCTIONS))
    shape = data.draw(shapes)
    if name in binary.CLASS_DIM_LOSSES and shape == ():
        shape = (1,)  # a class dimension is needed (0-d: tested in test_binary_losses)
    x, t = binary.make_inputs(name, shape, dtype, "cpu", seed=data.draw(st.integers(0, 99)))
    options = binary.resolve_options(binary.LOSSES[name][2], shape, dtype, "cpu")
    if name.startswith(("binary_cross_entropy", "bce_with_logits")) and data.draw(st.booleans()):
        weight_shape = data.draw(broadcast_partner(shape))
        options["weight"] = torch.rand(weight_shape, dtype=torch.float64).to(dtype) + 0.25
    if name == "bce_with_logits_pos_weight" and len(shape) and data.draw(st.booleans()):
        options["pos_weight"] = torch.rand(data.draw(broadcast_partner(shape)), dtype=torch.float64).to(dtype) * 3
    binary.check_against_oracle(name, data.draw(layouts(x)), data.draw(layouts(t)), reduction, options)


@given(data=st.data())
def test_multiclass_losses(data):
    import torch.nn.functional as F

    import test_multiclass_losses as multiclass
    FL = multiclass.FL
    dtype = data.draw(st.sampled_from(DTYPES))
    reduction = data.draw(st.sampled_from(multiclass.REDUCTIONS))
    classes = data.draw(st.integers(1, 40))
    batch = data.draw(st.integers(0, 6))
    extra = data.draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    shape = (classes,) if data.draw(st.integers(0, 5)) == 0 else (batch, classes, *extra)
    name = data.draw(st.sampled_from(["ce_index", "ce_prob", "nll"] + (["mm"] if len(shape) <= 2 else [])))
    seed = data.draw(st.integers(0, 99))
    x, x64, target, _ = multiclass.make_case(shape, dtype, "cpu", seed=seed, probabilities=name == "ce_prob",
                                             ignore_every=0 if name == "mm" else data.draw(st.integers(0, 3)))
    w = multiclass.class_weight(classes, dtype, "cpu") if data.draw(st.booleans()) else None
    w64 = None if w is None else w.double()
    smoothing = data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    x = data.draw(layouts(x))
    if name in ("ce_index", "ce_prob"):
        t_ours = target.to(dtype) if name == "ce_prob" else target
        multiclass.check_against(
            lambda v: FL.cross_entropy(v, t_ours, weight=w, reduction=reduction, label_smoothing=smoothing),
            lambda v: F.cross_entropy(v, target, weight=w64, reduction=reduction, label_smoothing=smoothing),
            x, x64, dtype)
    elif name == "nll":
        dim = 0 if len(shape) == 1 else 1
        multiclass.check_against(
            lambda v: FL.nll_loss(torch.log_softmax(v, dim), target, weight=w, reduction=reduction),
            lambda v: F.nll_loss(torch.log_softmax(v, dim), target, weight=w64, reduction=reduction),
            x, x64, dtype)
    else:
        target = target.clamp_min(0) % classes
        p = data.draw(st.sampled_from([1, 2]))
        margin = data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
        multiclass.check_against(
            lambda v: FL.multi_margin_loss(v, target, p=p, margin=margin, weight=w, reduction=reduction),
            lambda v: multiclass.multi_margin_reference(v, target, p=p, margin=margin, weight=w64, reduction=reduction),
            x, x64, dtype)


def _compare(ours_fn, ref_fn, inputs, dtype, broadcast=()):
    """Values and the gradients of `inputs` (in dtype) against the float64 oracle; inputs whose
    index is in `broadcast` sum rows rounded to the dtype, so they are compared scaled."""
    from tolerances import assert_close, assert_close_scaled
    ours_in = [x.clone().requires_grad_() for x in inputs]
    ref_in = [x.detach().double().requires_grad_() for x in inputs]
    ours, expected = ours_fn(*ours_in), ref_fn(*ref_in)
    assert ours.dtype == dtype and ours.shape == expected.shape
    assert_close(ours.double(), expected.detach().to(dtype).double(), dtype)
    grad_output = torch.rand_like(expected) + 0.5
    ours.backward(grad_output.to(dtype))
    expected.backward(grad_output.to(dtype).double())
    for i, (a, b) in enumerate(zip(ours_in, ref_in)):
        b_grad = b.grad if b.grad is not None else torch.zeros_like(b)
        if i in broadcast:
            assert_close_scaled(a.grad, b_grad, dtype, f"grad {i}")
        else:
            assert_close(a.grad.double(), b_grad.to(dtype).double(), dtype)


@given(data=st.data())
def test_row_losses(data):
    import torch.nn.functional as F

    import test_distillation as distillation
    import test_embedding_losses as embedding
    import test_multilabel_margin as multilabel
    dtype = data.draw(st.sampled_from(DTYPES))
    reduction = data.draw(st.sampled_from(["none", "mean", "sum"]))
    rows, width = data.draw(st.integers(0, 6)), data.draw(st.integers(1, 40))
    seed = data.draw(st.integers(0, 99))
    g = torch.Generator().manual_seed(seed)
    name = data.draw(st.sampled_from(["triplet", "multilabel_margin", "jsd"]))
    if name == "triplet":
        shape = (rows, width) if data.draw(st.booleans()) else (width,)
        negative_shape = data.draw(st.sampled_from([shape, (1,) + shape[1:]])) if len(shape) == 2 else shape
        inputs = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in (shape, shape, negative_shape)]
        inputs = [data.draw(layouts(x)) for x in inputs]
        p = data.draw(st.sampled_from([2.0, 1.0, 3.0, 0.5]))
        swap = data.draw(st.booleans())
        broadcast = (2,) if negative_shape != shape else ()
        _compare(lambda a, q, n: embedding.FL.triplet_margin_loss(a, q, n, margin=0.75, p=p, swap=swap, reduction=reduction),
                 lambda a, q, n: F.triplet_margin_loss(a, q, n, margin=0.75, p=p, swap=swap, reduction=reduction),
                 inputs, dtype, broadcast)
    elif name == "multilabel_margin":
        assume(reduction != "mean" or rows > 0)  # torch's empty 'mean' is uninitialized memory
        x = torch.randn(rows, width, generator=g, dtype=torch.float64).to(dtype)
        target = multilabel.label_rows(rows, width, g) if rows else torch.zeros(0, width, dtype=torch.long)
        _compare(lambda v: multilabel.FL.multilabel_margin_loss(v, target, reduction=reduction),
                 lambda v: F.multilabel_margin_loss(v, target, reduction=reduction), [data.draw(layouts(x))], dtype)
    else:
        student = torch.randn(rows, width, generator=g, dtype=torch.float64).to(dtype) * 2
        teacher = torch.randn(rows, width, generator=g, dtype=torch.float64).to(dtype) * 2
        labels = torch.randint(-1, 2, (rows,), generator=g) if data.draw(st.booleans()) else None
        beta = data.draw(st.sampled_from([0.0, 0.3, 1.0]))
        temperature = data.draw(st.sampled_from([1.0, 2.0]))
        _compare(lambda s: distillation.FL.jensen_shannon_divergence(s, teacher, labels, beta=beta, temperature=temperature,
                                                                     ignore_index=-1, reduction=reduction),
                 lambda s: distillation.jsd_reference(s, teacher.double(), labels, beta, temperature, -1, reduction),
                 [data.draw(layouts(student))], dtype)


@given(data=st.data())
def test_linear_cross_entropy(data):
    import test_linear_cross_entropy as linear
    dtype = data.draw(st.sampled_from(DTYPES))
    reduction = data.draw(st.sampled_from(linear.REDUCTIONS))
    n, h, v = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 9)), data.draw(st.integers(1, 30))
    x, w, b, t = linear.make_case(n, h, v, dtype, "cpu", seed=data.draw(st.integers(0, 99)),
                                  ignore_every=data.draw(st.integers(0, 4)), bias=data.draw(st.booleans()))
    options = {"chunk_size": data.draw(st.sampled_from([None, 1, 3, 64])),
               "label_smoothing": data.draw(st.sampled_from([0.0, 0.3])),
               "z_loss": data.draw(st.sampled_from([0.0, 0.01])),
               "softcap": data.draw(st.sampled_from([None, 4.0]))}
    assume(not ((t == -100).all() and reduction == "mean"))  # NaN: covered by its own test
    linear.check(x, w, b, t, dtype, reduction, **options)


@given(data=st.data())
def test_metrics_against_torchmetrics(data):
    tmf = pytest.importorskip("torchmetrics.functional", reason="torchmetrics not installed")
    from fusedloss import metrics
    name = data.draw(st.sampled_from(["accuracy", "precision", "recall", "f1_score", "stat_scores",
                                      "confusion_matrix"]))
    task = data.draw(st.sampled_from(["binary", "multiclass"]))
    n = data.draw(st.integers(1, 60))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    kw = {"task": task}
    if task == "binary":
        target = torch.randint(2, (n,), generator=g)
        kind = data.draw(st.sampled_from(["probabilities", "logits", "labels"]))
        logits = torch.randn(n, generator=g) * 3
        preds = {"probabilities": torch.sigmoid(logits), "logits": logits, "labels": (logits > 0).long()}[kind]
        kw["threshold"] = data.draw(st.sampled_from([0.3, 0.5, 0.8]))
    else:
        classes = data.draw(st.integers(2, 7))
        target = torch.randint(classes, (n,), generator=g)
        scores = torch.randn(n, classes, generator=g)
        preds = scores if data.draw(st.booleans()) else scores.argmax(1)
        kw["num_classes"] = classes
        if name not in ("confusion_matrix",):
            kw["average"] = data.draw(st.sampled_from(["micro", "macro", "weighted", "none"]))
    if data.draw(st.booleans()):
        ignore = data.draw(st.sampled_from([-1, 0]))
        target = target.clone()
        target[torch.rand(n, generator=g) < 0.3] = ignore
        kw["ignore_index"] = ignore
    if name in ("precision", "recall", "f1_score") and data.draw(st.booleans()):
        kw["zero_division"] = 1.0
    ours = getattr(metrics, name)(preds, target, **kw)
    theirs = getattr(tmf, name)(preds, target, **kw)
    torch.testing.assert_close(ours.to(theirs.dtype), theirs, rtol=1e-5, atol=1e-6, equal_nan=True)

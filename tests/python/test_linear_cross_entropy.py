"""linear_cross_entropy against F.cross_entropy(F.linear(input, weight, bias), target, ...) and
against torch's own F.linear_cross_entropy where the installed torch has it: values and the
gradients of input, weight and bias, over reductions, ignored tokens, label smoothing, z-loss,
softcap, chunk sizes, odd shapes and four dtypes."""

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from deferred import raises
from tolerances import assert_close, assert_close_scaled

FL = fusedloss.functional
REDUCTIONS = ["none", "mean", "sum"]
def make_case(n, h, v, dtype, device, seed=0, ignore_every=4, bias=True, batch_shape=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=g, dtype=torch.float64)
    w = torch.randn(v, h, generator=g, dtype=torch.float64) / h ** 0.5 * 2
    b = torch.randn(v, generator=g, dtype=torch.float64) if bias else None
    t = torch.randint(v, (n,), generator=g)
    if ignore_every:
        t[::ignore_every] = -100
    if batch_shape is not None:
        x, t = x.view(*batch_shape, h), t.view(*batch_shape)
    cast = (lambda a: None if a is None else a.to(dtype).to(device))
    return cast(x), cast(w), cast(b), t.to(device)


def reference(x, w, b, t, reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None, weight=None):
    logits = F.linear(x, w, b)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    flat, tf = logits.reshape(-1, logits.shape[-1]), t.reshape(-1)
    loss = F.cross_entropy(flat, tf, weight=weight, reduction=reduction, label_smoothing=label_smoothing)
    if z_loss:
        valid = tf != -100
        z = torch.where(valid, z_loss * torch.logsumexp(flat, 1) ** 2, torch.zeros(()))
        loss = loss + {"none": z, "sum": z.sum(), "mean": z.sum() / valid.sum()}[reduction]
    return loss.view(t.shape) if reduction == "none" else loss


def check(x, w, b, t, dtype, reduction="mean", grad_out=None, **kw):
    params = [p for p in (x, w, b) if p is not None]
    ours_in = [p.clone().requires_grad_() for p in params]
    ref_in = [p.double().clone().requires_grad_() for p in params]
    ours = FL.linear_cross_entropy(ours_in[0], ours_in[1], t, ours_in[2] if b is not None else None,
                                   reduction=reduction, **kw)
    ref_kw = {k: v for k, v in kw.items() if k != "chunk_size"}
    if "weight" in ref_kw and ref_kw["weight"] is not None:
        ref_kw["weight"] = ref_kw["weight"].double()
    ref = reference(ref_in[0], ref_in[1], ref_in[2] if b is not None else None, t, reduction, **ref_kw)
    assert ours.dtype == dtype and ours.shape == ref.shape
    assert_close_scaled(ours, ref, dtype, "loss")
    grad = torch.linspace(0.5, 1.5, ref.numel(), dtype=torch.float64).view(ref.shape).to(ref.device)
    ours.backward(grad.to(dtype))
    ref.backward(grad)
    # Each gradient sums logit gradients (about 1/n for 'mean' over n tokens not ignored, about 1
    # otherwise) times values of order 1, which may nearly cancel: their size is the floor.
    term = 1.0 / max(1, int((t != -100).sum())) if reduction == "mean" else 1.0
    for name, a, r in zip(("input", "weight", "bias"), ours_in, ref_in):
        assert a.grad.dtype == dtype and a.grad.shape == r.grad.shape
        assert_close_scaled(a.grad, r.grad, dtype, f"grad {name}", floor=term)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_matches_unfused_torch(dtype, reduction, chunk_size, device):
    x, w, b, t = make_case(37, 19, 53, dtype, device)
    check(x, w, b, t, dtype, reduction, chunk_size=chunk_size)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [
    {"label_smoothing": 0.15}, {"z_loss": 0.01}, {"softcap": 3.0},
    {"label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0, "weight": True},
], ids=["smoothing", "z_loss", "softcap", "all+class-weights"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_options_match_their_formulas(reduction, options, dtype, device):
    x, w, b, t = make_case(29, 11, 41, dtype, device, seed=1)
    kw = dict(options)
    if kw.pop("weight", False):
        kw["weight"] = (torch.arange(41, dtype=torch.float64) % 3 * 0.5 + 0.5).to(dtype).to(device)
    check(x, w, b, t, dtype, reduction, chunk_size=8, **kw)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_many_classes_take_the_column_blocks(bias, dtype, device):
    # The CPU takes a chunk's logits in column blocks of about 4 MiB of weight: with H=2048 that is
    # 256 float64 or 512 float32 classes, so V=1100 makes 3 to 5 blocks, the last one partial.
    x, w, b, t = make_case(6, 2048, 1100, dtype, device, seed=3, bias=bias)
    for reduction in REDUCTIONS:
        check(x, w, b, t, dtype, reduction, chunk_size=4)


def test_batched_input_and_no_bias(device):
    x, w, _, t = make_case(24, 13, 31, torch.float64, device, bias=False, batch_shape=(4, 6))
    for reduction in REDUCTIONS:
        check(x, w, None, t, torch.float64, reduction, chunk_size=5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_token_ignored_behaves_as_torch(reduction, dtype, device):
    x, w, b, _ = make_case(9, 5, 7, dtype, device)
    t = torch.full((9,), -100, device=device)
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    ours = FL.linear_cross_entropy(xs, ws, t, b, reduction=reduction)
    ref = F.cross_entropy(F.linear(x.double(), w.double(), b.double()), t, reduction=reduction)
    assert_close(ours.double(), ref, dtype)  # NaN for 'mean', as torch
    ours.sum().backward()
    assert (xs.grad == 0).all() and (ws.grad == 0).all()


def test_only_the_gradients_that_are_needed(device):
    x, w, b, t = make_case(10, 6, 9, torch.float64, device)
    for needs in [(True, False, False), (False, True, False), (False, False, True), (True, True, False)]:
        ins = [p.clone().requires_grad_(n) for p, n in zip((x, w, b), needs)]
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda s: sizes.append(tuple(s.shape)) or s, lambda s: s):
            loss = FL.linear_cross_entropy(ins[0], ins[1], t, ins[2])
        kept = {s for s in sizes if s not in ((), (0,))}
        assert kept == {tuple(p.shape) for p, n in zip((x, w, b), needs) if n}, kept
        loss.backward()
        refs = [p.clone().requires_grad_(n) for p, n in zip((x, w, b), needs)]
        F.cross_entropy(F.linear(*refs), t).backward()
        for a, r, n in zip(ins, refs, needs):
            assert (a.grad is None) == (not n)
            if n:
                assert_close(a.grad, r.grad)
    with torch.no_grad():
        assert FL.linear_cross_entropy(x.requires_grad_(), w, t, b).grad_fn is None


def test_half_precision_weight_gradient_accumulates_in_float32():
    """1024 chunks of one row each: a bfloat16 running sum would drift by several percent."""
    x, w, b, t = make_case(1024, 8, 16, torch.bfloat16, "cpu", ignore_every=0, bias=False)
    ws = w.clone().requires_grad_()
    FL.linear_cross_entropy(x, ws, t, reduction="sum", chunk_size=1).backward()
    wr = w.double().requires_grad_()
    F.cross_entropy(F.linear(x.double(), wr), t, reduction="sum").backward()
    assert_close_scaled(ws.grad, wr.grad, torch.bfloat16, "grad weight")
    assert ((ws.grad.double() - wr.grad).abs().max() / wr.grad.abs().max()) < 1e-2


@pytest.mark.skipif(not hasattr(F, "linear_cross_entropy"), reason="this torch has no F.linear_cross_entropy")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_same_call_and_values_as_torch_linear_cross_entropy(reduction, device):
    x, w, b, t = make_case(33, 12, 40, torch.float32, device, seed=3)
    cw = torch.rand(40, device=device) + 0.5
    # No label smoothing: with it torch 2.14 falls back to its unfused reference path.
    call = dict(linear_bias=b, weight=cw, reduction=reduction, ignore_index=None)
    ins_ours = [p.clone().requires_grad_() for p in (x, w)]
    ins_torch = [p.clone().requires_grad_() for p in (x, w)]
    assert (t == -100).any()  # ignore_index=None means -100 in both: ignored rows are compared too
    ours = FL.linear_cross_entropy(*ins_ours, t, **call)
    theirs = F.linear_cross_entropy(*ins_torch, t, **call, options=torch.nn.LinearCrossEntropyOptions())
    assert_close(ours, theirs)
    ours.sum().backward()
    theirs.sum().backward()
    for a, r in zip(ins_ours, ins_torch):
        assert_close(a.grad, r.grad)


def test_issue_style_positional_and_keyword_calls():
    x, w, b, t = make_case(6, 4, 5, torch.float64, "cpu")
    expected = reference(x, w, b, t)
    assert_close(FL.linear_cross_entropy(x, w, t, b), expected)
    assert_close(FL.linear_cross_entropy(x, weight=w, target=t, bias=b), expected)
    assert_close(FL.linear_cross_entropy(x, w, t, linear_bias=b), expected)


def test_module_is_drop_in_and_scripts():
    torch.manual_seed(0)
    ours = fusedloss.nn.LinearCrossEntropyLoss(12, 30, bias=True, label_smoothing=0.1, chunk_size=4)
    x = torch.randn(2, 5, 12)
    t = torch.randint(30, (2, 5))
    logits = F.linear(x, ours.linear.weight, ours.linear.bias)
    expected = F.cross_entropy(logits.view(-1, 30), t.view(-1), label_smoothing=0.1)
    assert_close(ours(x, t), expected)
    if hasattr(torch.nn, "LinearCrossEntropyLoss"):
        assert isinstance(ours, torch.nn.LinearCrossEntropyLoss)
        theirs = torch.nn.LinearCrossEntropyLoss(12, 30, bias=True, label_smoothing=0.1)
        theirs.load_state_dict(ours.state_dict())
        # torch's module takes (N, H) inputs only; ours also (B, T, H).
        assert_close(ours(x.view(-1, 12), t.view(-1)), theirs(x.view(-1, 12), t.view(-1)))
    assert_close(torch.jit.script(ours)(x, t), expected)


def test_gradcheck_float64():
    x, w, b, t = make_case(7, 4, 6, torch.float64, "cpu", ignore_every=3)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, c, d: FL.linear_cross_entropy(a, c, t, d, reduction=reduction, label_smoothing=0.2,
                                                    z_loss=0.05, softcap=2.0, chunk_size=3),
            (x.requires_grad_(), w.requires_grad_(), b.requires_grad_()))


def test_double_backward_raises_clear_error():
    x, w, b, t = make_case(5, 3, 4, torch.float64, "cpu", ignore_every=0)
    x.requires_grad_()
    with pytest.raises(RuntimeError, match="double backward.*not supported"):
        torch.autograd.grad(FL.linear_cross_entropy(x, w, t, b), x, create_graph=True)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, device):
    x, w, b, t = make_case(9, 4, 6, torch.float32, device)
    torch.library.opcheck(torch.ops.fusedloss.linear_cross_entropy,
                          (x.requires_grad_(requires_grad), w.requires_grad_(requires_grad), t, b, None,
                           -100, "mean", 0.1), {"z_loss": 0.01, "chunk_size": 4})
    torch.library.opcheck(torch.ops.fusedloss._linear_cross_entropy,
                          (x.detach(), w.detach(), t, b, None, -100, "sum", 0.0, 0.0, None, 4, True,
                           None, True, True, True))


def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    x, w, b, t = make_case(12, 6, 10, torch.float32, device)
    ws = w.clone().requires_grad_()
    compiled = torch.compile(lambda a, c, d, u: FL.linear_cross_entropy(a, c, u, d, chunk_size=5),
                             fullgraph=True)
    loss = compiled(x, ws, b, t)
    loss.backward()
    wr = w.clone().requires_grad_()
    ref = F.cross_entropy(F.linear(x, wr, b), t)
    ref.backward()
    assert_close(loss, ref)
    assert_close(ws.grad, wr.grad)


def test_bad_arguments():
    x, w, b, t = make_case(6, 4, 5, torch.float32, "cpu")
    with pytest.raises(RuntimeError, match=r"linear_weight of shape \[5, 3\] does not fit input of shape \[6, 4\]"):
        FL.linear_cross_entropy(x, w[:, :3], t)
    with pytest.raises(RuntimeError, match=r"target of shape \[5\] does not match input of shape \[6, 4\]"):
        FL.linear_cross_entropy(x, w, t[:5])
    with pytest.raises(RuntimeError, match=r"linear_bias must have shape \[5\] \(the classes, then linear_weight's out_features\), got shape \[4\]"):
        FL.linear_cross_entropy(x, w, t, b[:4])
    with pytest.raises(RuntimeError, match="linear_weight must have the input's dtype"):
        FL.linear_cross_entropy(x, w.double(), t)
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        FL.linear_cross_entropy(x, w, t, chunk_size=0)
    with raises(IndexError, match="target 5 is out of bounds.*position 2"):
        FL.linear_cross_entropy(x, w, torch.tensor([0, 1, 5, 2, 3, 4]))
    with pytest.raises(RuntimeError, match="label_smoothing must be between 0.0 and 1.0"):
        FL.linear_cross_entropy(x, w, t, label_smoothing=2.0)


def test_strided_target(device):
    x, w, b, t = make_case(12, 5, 9, torch.float64, device)
    wide = torch.stack([t, t.flip(0)], 1)
    assert_close(FL.linear_cross_entropy(x, w, wide[:, 0], b, chunk_size=5), reference(x, w, b, t))


@pytest.mark.skipif(not hasattr(torch.nn, "LinearCrossEntropyLoss"), reason="torch < 2.13 has no LinearCrossEntropyLoss")
def test_replace_losses_swaps_torch_linear_cross_entropy_loss():
    torch.manual_seed(0)
    head = torch.nn.LinearCrossEntropyLoss(16, 50, bias=True, ignore_index=3, label_smoothing=0.1)
    several_dims = torch.nn.LinearCrossEntropyLoss(16, 10, out_features=(2,), bias=True)
    model = torch.nn.ModuleDict({"head": head, "several": several_dims})
    x = torch.randn(12, 16)
    t2 = torch.randint(10, (12, 2))
    expected_several = several_dims(x, t2)
    t = torch.randint(50, (12,))
    t[::4] = 3
    expected = head(x, t)
    expected_grads = torch.autograd.grad(expected, [head.linear.weight, head.linear.bias])
    keys = set(model.state_dict())
    fusedloss.nn.replace_losses(model)
    assert type(head) is fusedloss.nn.LinearCrossEntropyLoss and set(model.state_dict()) == keys
    assert type(several_dims) is fusedloss.nn.LinearCrossEntropyLoss
    ours = head(x, t)
    assert_close(ours, expected)
    for a, b in zip(torch.autograd.grad(ours, [head.linear.weight, head.linear.bias]), expected_grads):
        assert_close(a, b)
    assert_close(several_dims(x, t2), expected_several)


def several_dims_case(n, h, v, out_features, dtype, device, seed=0, probabilities=False):
    """input (n, h), linear_weight (v, *out_features, h), bias (v, *out_features); class-index
    targets (n, *out_features) with some ignored, or probabilities (n, v, *out_features)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=g, dtype=torch.float64)
    w = torch.randn(v, *out_features, h, generator=g, dtype=torch.float64) / h ** 0.5 * 2
    b = torch.randn(v, *out_features, generator=g, dtype=torch.float64)
    if probabilities:
        t = torch.softmax(torch.randn(n, v, *out_features, generator=g, dtype=torch.float64), 1).to(dtype)
    else:
        t = torch.randint(v, (n, *out_features), generator=g)
        t.view(-1)[::5] = -100
    cast = (lambda a: a.to(dtype).to(device))
    return cast(x), cast(w), cast(b), t.to(device)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("out_features,probabilities", [((), True), ((3,), False), ((2, 3), False),
                                                        ((3,), True)], ids=str)
def test_out_features_and_probability_targets_match_torch(out_features, probabilities, reduction, dtype, device):
    # torch's F.linear_cross_entropy without options is its reference path: linear, then
    # cross_entropy; compared in float64 from the same values.
    x, w, b, t = several_dims_case(10, 6, 7, out_features, dtype, device, probabilities=probabilities)
    cw = torch.linspace(0.5, 1.5, 7, dtype=torch.float64, device=device)
    for chunk_size, kwargs in ((3, dict(weight=cw.to(dtype))), (None, dict(label_smoothing=0.1))):
        ours_in = [p.clone().requires_grad_() for p in (x, w, b)]
        ref_in = [p.double().clone().requires_grad_() for p in (x, w, b)]
        ref_kwargs = {k: (v.double() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
        ours = FL.linear_cross_entropy(ours_in[0], ours_in[1], t, linear_bias=ours_in[2], reduction=reduction,
                                       chunk_size=chunk_size, **kwargs)
        ref = F.linear_cross_entropy(ref_in[0], ref_in[1], t.double() if probabilities else t,
                                     linear_bias=ref_in[2], reduction=reduction, **ref_kwargs)
        assert ours.dtype == dtype and ours.shape == ref.shape
        assert_close_scaled(ours, ref, dtype, "loss")
        grad = torch.linspace(0.5, 1.5, ref.numel(), dtype=torch.float64, device=device).view(ref.shape)
        ours.backward(grad.to(dtype))
        ref.backward(grad)
        for name, a, r in zip(("input", "linear_weight", "linear_bias"), ours_in, ref_in):
            assert a.grad.shape == a.shape
            assert_close_scaled(a.grad, r.grad, dtype, f"grad {name}", floor=1e-2)


def test_probability_target_that_requires_grad_takes_the_unfused_path():
    x, w, b, t = several_dims_case(5, 4, 6, (2,), torch.float64, "cpu", probabilities=True)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, c, u: FL.linear_cross_entropy(a, c, u, b, reduction=reduction, label_smoothing=0.2),
            (x.clone().requires_grad_(), w.clone().requires_grad_(), t.clone().requires_grad_()))
    tr = t.clone().requires_grad_()
    ours = FL.linear_cross_entropy(x, w, tr, b, reduction="none")
    expected = F.linear_cross_entropy(x, w, t, linear_bias=b, reduction="none")
    assert_close(ours, expected)


def test_several_dims_gradcheck_module_and_errors():
    x, w, b, t = several_dims_case(6, 4, 5, (2,), torch.float64, "cpu")
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, c, d: FL.linear_cross_entropy(a, c, t, d, reduction=reduction, z_loss=0.05, chunk_size=4),
            (x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()))
    torch.manual_seed(1)
    ours = fusedloss.nn.LinearCrossEntropyLoss(4, 5, out_features=(2,), bias=True)
    weight = ours.linear.weight.reshape(5, 2, 4)
    expected = F.cross_entropy(torch.einsum("nh,cdh->ncd", x.float(), weight) + ours.linear.bias.reshape(5, 2), t)
    assert_close(ours(x.float(), t), expected)
    assert_close(torch.jit.script(ours)(x.float(), t), expected)
    with pytest.raises(RuntimeError, match=r"requires batched input, \(N, 4\), got unbatched input with shape \[4\]"):
        FL.linear_cross_entropy(x[0], w, t[0])
    with pytest.raises(RuntimeError, match=r"expected class indices of shape \[6, 2\] or probabilities of shape \[6, 5, 2\]"):
        FL.linear_cross_entropy(x, w, t[:, 0])
    with pytest.raises(RuntimeError, match=r"linear_bias must have shape \[5, 2\]"):
        FL.linear_cross_entropy(x, w, t, b[:, 0])
    with pytest.raises(RuntimeError, match="holds class probabilities and must be floating point"):
        FL.linear_cross_entropy(x, w, torch.zeros(6, 5, 2, dtype=torch.long))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_several_dims_and_probabilities(requires_grad, device):
    for probabilities in (False, True):
        x, w, b, t = several_dims_case(7, 4, 5, (2,), torch.float32, device, probabilities=probabilities)
        torch.library.opcheck(torch.ops.fusedloss.linear_cross_entropy,
                              (x.requires_grad_(requires_grad), w.requires_grad_(requires_grad), t, b, None,
                               -100, "none", 0.1), {"chunk_size": 3})


def test_zero_hidden_features_give_bias_only_logits():
    # H = 0: the logits are the bias (or zeros); one row of loss per input row still.
    x, w, b = torch.zeros(4, 0), torch.zeros(5, 0), torch.randn(5)
    t = torch.tensor([0, 4, -100, 2])
    for reduction in REDUCTIONS:
        for bias in (None, b):
            assert_close(FL.linear_cross_entropy(x, w, t, bias, reduction=reduction),
                         F.cross_entropy(F.linear(x, w, bias), t, reduction=reduction))

"""jensen_shannon_divergence (distillation) against its formula in plain torch ops, in float64:
values and the student's gradient over beta (forward KL, reverse KL, JSD), temperature, ignored
rows, shapes, dtypes and reductions; gradcheck, opcheck, torch.compile, TorchScript, what is kept
for backward, and bad arguments."""

import math

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from tolerances import DTYPES, assert_close

FL = fusedloss.functional
REDUCTIONS = ["none", "mean", "sum"]
BETAS = [0.0, 0.5, 1.0, 0.1]


def jsd_reference(student, teacher, labels=None, beta=0.5, temperature=1.0, ignore_index=-100,
                  reduction="mean"):
    """The divergence per row in plain torch ops; a term with probability 0 counts 0."""
    x = torch.log_softmax(student / temperature, -1)
    y = torch.log_softmax(teacher / temperature, -1)
    q, p = x.exp(), y.exp()
    if beta == 0:
        rows = torch.where(p > 0, p * (y - x), 0).sum(-1)
    elif beta == 1:
        rows = torch.where(q > 0, q * (x - y), 0).sum(-1)
    else:
        log_m = torch.log(beta * p + (1 - beta) * q)
        rows = (torch.where(p > 0, beta * p * (y - log_m), 0)
                + torch.where(q > 0, (1 - beta) * q * (x - log_m), 0)).sum(-1)
    keep = torch.ones_like(rows, dtype=torch.bool) if labels is None else labels != ignore_index
    rows = torch.where(keep, rows, 0)
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.sum() / keep.sum()


def logits(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 2).to(dtype).to(device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(8, 50), (2, 3, 7), (5,), (4, 1), (3, 3000), (0, 5)], ids=str)
def test_jsd_matches_formula(shape, reduction, dtype, device):
    student, teacher = logits(shape, dtype, device, 1), logits(shape, dtype, device, 2)
    g = torch.Generator().manual_seed(3)
    label_shape = shape[:-1]
    labels = torch.randint(0, 3, label_shape, generator=g).to(device) - 1  # some -1 to ignore
    for beta in BETAS:
        for temperature, use_labels in ((1.0, False), (2.5, True)):
            lab = labels if use_labels else None
            ours_x = student.clone().requires_grad_()
            ref_x = student.double().clone().requires_grad_()
            ours = FL.jensen_shannon_divergence(ours_x, teacher, lab, beta=beta, temperature=temperature,
                                                ignore_index=-1, reduction=reduction)
            expected = jsd_reference(ref_x, teacher.double(), lab, beta, temperature, -1, reduction)
            what = f"beta={beta} T={temperature} labels={use_labels}"
            assert ours.dtype == dtype and ours.shape == expected.shape, what
            assert_close(ours.double(), expected.detach().to(dtype).double(), dtype, msg=what)
            grad_output = torch.rand_like(expected) + 0.5
            ours.backward(grad_output.to(dtype))
            expected.backward(grad_output.to(dtype).double())
            assert_close(ours_x.grad.double(), ref_x.grad.to(dtype).double(), dtype, msg=what + " grad")


def test_forward_kl_is_torch_kl_div():
    student, teacher = logits((6, 9), torch.float64, "cpu", 4), logits((6, 9), torch.float64, "cpu", 5)
    ours = FL.jensen_shannon_divergence(student, teacher, beta=0.0)
    expected = F.kl_div(torch.log_softmax(student, -1), torch.log_softmax(teacher, -1), reduction="batchmean",
                        log_target=True)
    assert_close(ours, expected)


@pytest.mark.parametrize("beta", BETAS)
def test_jsd_gradcheck(beta):
    student = logits((4, 6), torch.float64, "cpu", 6).requires_grad_()
    teacher = logits((4, 6), torch.float64, "cpu", 7)
    labels = torch.tensor([0, -100, 2, 1])
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda s: FL.jensen_shannon_divergence(s, teacher, labels, beta=beta, temperature=1.7,
                                                   reduction=reduction), (student,))


def test_masked_teacher_logits_stay_finite():
    # -inf teacher logits (a masked vocabulary): their terms are 0, as kl_div's t = 0.
    student = logits((3, 8), torch.float64, "cpu", 8).requires_grad_()
    teacher = logits((3, 8), torch.float64, "cpu", 9)
    teacher[:, :3] = -math.inf
    for beta in (0.0, 0.5):
        loss = FL.jensen_shannon_divergence(student, teacher, beta=beta)
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        with torch.no_grad():  # the formula's value is right (its gradient there is NaN)
            assert_close(loss, jsd_reference(student, teacher, beta=beta))


def test_teacher_dtype_is_cast_to_the_students():
    student = logits((4, 10), torch.bfloat16, "cpu", 10)
    teacher = logits((4, 10), torch.float32, "cpu", 11)
    assert_close(FL.jensen_shannon_divergence(student, teacher).double(),
                 jsd_reference(student.double(), teacher.bfloat16().double()), torch.bfloat16)


def test_jsd_module_script_memory_and_errors():
    student = logits((5, 7), torch.float32, "cpu", 12).requires_grad_()
    teacher = logits((5, 7), torch.float32, "cpu", 13)
    labels = torch.tensor([1, -100, 3, 0, 2])
    module = fusedloss.nn.JSDLoss(beta=0.3, temperature=2.0)
    expected = jsd_reference(student, teacher, labels, 0.3, 2.0)
    assert_close(module(student, teacher, labels), expected)
    assert_close(torch.jit.script(module)(student, teacher, labels), expected)
    assert_close(torch.jit.script(module)(student, teacher), jsd_reference(student, teacher, None, 0.3, 2.0))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        FL.jensen_shannon_divergence(student, teacher, labels)
    assert sum(t.numel() for t in saved) <= student.numel() + 1  # the student's gradient, a scale
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\].*got 1.5"):
        FL.jensen_shannon_divergence(student, teacher, beta=1.5)
    with pytest.raises(ValueError, match="temperature must be positive and finite, got 0"):
        FL.jensen_shannon_divergence(student, teacher, temperature=0.0)
    with pytest.raises(RuntimeError, match=r"target \(teacher logits\) must have input's shape \[5, 7\], got \[5, 6\]"):
        FL.jensen_shannon_divergence(student, teacher[:, :6])
    with pytest.raises(RuntimeError, match=r"labels must hold one value per row, of shape \[5\], got \[4\]"):
        FL.jensen_shannon_divergence(student, teacher, labels[:4])
    with pytest.raises(RuntimeError, match="labels must be int64"):
        FL.jensen_shannon_divergence(student, teacher, labels.int())
    with pytest.raises(RuntimeError, match="derivative for 'target'.*Pass target.detach"):
        FL.jensen_shannon_divergence(student, teacher.clone().requires_grad_())
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(FL.jensen_shannon_divergence(student, teacher), student, create_graph=True)
    with pytest.raises(RuntimeError, match="at least 1-D"):
        FL.jensen_shannon_divergence(student[0, 0], teacher[0, 0])


@pytest.mark.parametrize("requires_grad", [False, True])
def test_jsd_internal_opcheck_and_compile(requires_grad, device):
    student = logits((5, 6), torch.float32, device, 14).requires_grad_(requires_grad)
    teacher = logits((5, 6), torch.float32, device, 15)
    labels = torch.tensor([0, -100, 1, 2, -100], device=device)
    for reduction in REDUCTIONS:
        torch.library.opcheck(torch.ops.fusedloss._jensen_shannon_divergence_forward,
                              (student.detach(), teacher, labels, 0.5, 2.0, -100, reduction, True))
    if requires_grad:
        torch._dynamo.reset()
        compiled = torch.compile(lambda s: FL.jensen_shannon_divergence(s, teacher, labels, beta=0.2),
                                 fullgraph=True, backend="aot_eager")
        out = compiled(student)
        out.backward()
        sr = student.detach().clone().requires_grad_()
        expected = jsd_reference(sr, teacher, labels, 0.2)
        expected.backward()
        assert_close(out, expected)
        assert_close(student.grad, sr.grad)


OPS = {
    "jensen_shannon_divergence": lambda d: ((logits((4, 5), torch.float32, d, 16), logits((4, 5), torch.float32, d, 17),
                                             torch.tensor([1, -100, 0, 2], device=d), 0.5, 1.5, -100, "mean"), {}),
    "jensen_shannon_divergence_forward_kl": lambda d: ((logits((2, 3, 5), torch.float32, d, 18),
                                                        logits((2, 3, 5), torch.float32, d, 19), None, 0.0, 1.0,
                                                        -100, "none"), {}),
}


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(name, requires_grad, device):
    args, kwargs = OPS[name](device)
    args = (args[0].requires_grad_(requires_grad),) + args[1:]
    torch.library.opcheck(torch.ops.fusedloss.jensen_shannon_divergence, args, kwargs)

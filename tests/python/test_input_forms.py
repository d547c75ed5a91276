"""Every input form of the "Shape" sections of torch.nn's loss classes (0-d, 1-D and unbatched
included), through fusedloss.nn's drop-in against the torch module: the same values and
gradients, or the same exception type where torch refuses. float64, CPU."""

import warnings

import pytest
import torch

import fusedloss


G = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.rand(shape, generator=G, dtype=torch.float64)


def randn(*shape):
    return torch.randn(shape, generator=G, dtype=torch.float64)


def signs(*shape):
    return torch.where(rand(*shape) > 0.5, 1.0, -1.0)


def classes(c, *shape):
    return torch.randint(c, shape, generator=G)


def labels_then_end(*shape):
    """multilabel_margin_loss targets: a label, then -1."""
    t = torch.full(shape, -1, dtype=torch.long)
    t[..., 0] = 1 if shape[-1] > 1 else 0
    return t


POINTWISE = [(), (5,), (3, 4), (2, 3, 4)]

# torch.nn class name -> (constructor keyword arguments, [the forward's arguments per form]).
FORMS = {
    "MSELoss": ({}, [(randn(*s), randn(*s)) for s in POINTWISE]),
    "L1Loss": ({}, [(randn(*s), randn(*s)) for s in POINTWISE]),
    "HuberLoss": ({"delta": 0.5}, [(randn(*s), randn(*s)) for s in POINTWISE]),
    "SmoothL1Loss": ({"beta": 0.5}, [(randn(*s), randn(*s)) for s in POINTWISE]),
    "SoftMarginLoss": ({}, [(randn(*s), signs(*s)) for s in POINTWISE]),
    "PoissonNLLLoss": ({}, [(randn(*s), rand(*s) * 3) for s in POINTWISE]),
    "KLDivLoss": ({"reduction": "batchmean"}, [(randn(*s), rand(*s)) for s in POINTWISE]),
    "BCELoss": ({}, [(rand(*s), rand(*s)) for s in POINTWISE]),
    "BCEWithLogitsLoss": ({}, [(randn(*s), rand(*s)) for s in POINTWISE]),
    "HingeEmbeddingLoss": ({}, [(randn(*s), signs(*s)) for s in POINTWISE]),
    "GaussianNLLLoss": ({}, [(randn(3, 4), randn(3, 4), rand(3, 4) + 0.1), (randn(3, 4), randn(3, 4), rand(3, 1) + 0.1),
                             (randn(3, 4), randn(3, 4), rand(3) + 0.1), (randn(4), randn(4), rand(4) + 0.1),
                             (randn(4), randn(4), rand(1) + 0.1), (randn(), randn(), rand() + 0.1)]),
    "MarginRankingLoss": ({"margin": 0.1}, [(randn(5), randn(5), signs(5)), (randn(), randn(), signs())]),
    "CosineEmbeddingLoss": ({"margin": 0.1}, [(randn(4, 6), randn(4, 6), signs(4)), (randn(6), randn(6), signs())]),
    "TripletMarginLoss": ({"swap": True}, [(randn(4, 6), randn(4, 6), randn(4, 6)), (randn(6), randn(6), randn(6))]),
    "TripletMarginWithDistanceLoss": ({}, [(randn(4, 6), randn(4, 6), randn(4, 6)), (randn(6), randn(6), randn(6))]),
    "CrossEntropyLoss": ({"label_smoothing": 0.1},
                         [(randn(5), classes(5)), (randn(4, 5), classes(5, 4)), (randn(2, 5, 3), classes(5, 2, 3)),
                          (randn(2, 5, 3, 2), classes(5, 2, 3, 2)), (randn(5), rand(5).softmax(0)),
                          (randn(4, 5), rand(4, 5).softmax(1)), (randn(2, 5, 3), rand(2, 5, 3).softmax(1))]),
    "NLLLoss": ({}, [(randn(5), classes(5)), (randn(4, 5), classes(5, 4)), (randn(2, 5, 3), classes(5, 2, 3)),
                     (randn(2, 5, 3, 2), classes(5, 2, 3, 2))]),
    "NLLLoss2d": ({}, [(randn(2, 5, 3, 2), classes(5, 2, 3, 2))]),
    "MultiMarginLoss": ({"p": 2}, [(randn(4, 5), classes(5, 4)), (randn(5), classes(5)), (randn(), classes(1))]),
    "MultiLabelMarginLoss": ({}, [(randn(4, 5), labels_then_end(4, 5)), (randn(5), labels_then_end(5)),
                                  (randn(), torch.tensor(0))]),
    "MultiLabelSoftMarginLoss": ({}, [(randn(4, 5), rand(4, 5).round()), (randn(5), rand(5).round())]),
}
if hasattr(torch.nn, "LinearCrossEntropyLoss"):
    FORMS["LinearCrossEntropyLoss"] = ({"in_features": 6, "num_classes": 5, "bias": True},
                                       [(randn(4, 6), classes(5, 4)), (randn(6), classes(5)),
                                        (randn(4, 6), rand(4, 5).softmax(1))])
    FORMS["LinearCrossEntropyLoss out_features"] = (
        {"in_features": 6, "num_classes": 5, "out_features": (2, 3)},
        [(randn(4, 6), classes(5, 4, 2, 3)), (randn(4, 6), rand(4, 5, 2, 3).softmax(1)), (randn(6), classes(5, 2, 3))])


def run(module, args):
    """The loss and the gradients of the float arguments that torch differentiates (the inputs;
    targets are data), or the exception raised."""
    differentiable = {0, 1, 2} if len(args) == 3 and args[2].shape == args[0].shape else {0}
    if type(module).__name__.startswith(("MarginRanking", "CosineEmbedding")):
        differentiable = {0, 1}
    leaves = [a.clone().requires_grad_(i in differentiable) for i, a in enumerate(args)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = module(*leaves)
        loss.sum().backward()
    except Exception as error:  # noqa: BLE001 - compared by type with torch's
        return error
    grads = [leaf.grad for i, leaf in enumerate(leaves) if i in differentiable]
    grads += [p.grad for p in module.parameters()]
    return (loss.detach(), *grads)


@pytest.mark.parametrize("name", list(FORMS))
def test_every_shape_form_matches_torch(name):
    kwargs, forms = FORMS[name]
    class_name = name.split()[0]
    torch.manual_seed(0)
    theirs = getattr(torch.nn, class_name)(**kwargs).double()
    ours = getattr(fusedloss.nn, class_name)(**kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    for i, args in enumerate(forms):
        for module in (theirs, ours):
            module.zero_grad(set_to_none=True)
        what = f"{name} form {i}: shapes {[tuple(a.shape) for a in args]}"
        expected, got = run(theirs, args), run(ours, args)
        if isinstance(expected, Exception):
            assert isinstance(got, type(expected)), f"{what}: torch raises {expected!r}, ours gives {got!r}"
            continue
        assert not isinstance(got, Exception), f"{what}: torch accepts it, ours raises {got!r}"
        assert len(got) == len(expected), what
        for j, (a, b) in enumerate(zip(got, expected)):
            part = "loss" if j == 0 else f"gradient {j}"
            if b is None:  # no gradient in torch's graph (p = 0 norms): ours is zero or none
                assert a is None or not a.any(), f"{what}: {part}"
                continue
            assert a.shape == b.shape, f"{what}: {part} shape"
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, equal_nan=True, msg=f"{what}: {part}")


def test_every_torch_loss_class_has_its_forms():
    expected = {n for n in dir(torch.nn) if isinstance(getattr(torch.nn, n), type)
                and issubclass(getattr(torch.nn, n), torch.nn.modules.loss._Loss)} - {"CTCLoss"}
    assert expected <= {name.split()[0] for name in FORMS}

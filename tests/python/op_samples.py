"""A valid call of every public loss op of torch.ops.fusedloss and of the internal ops the metrics
run, for a batch of any size >= 2: the positional arguments, keyword arguments, and for each
tensor argument the dimension that is the batch (None: no batch dimension; (d, k): dimension d
holds k times the batch). The export and
Inductor tests (test_export.py) are driven by this table; test_completeness.py checks that every
public op is in it."""

import torch

C = 7  # classes


def _g(b):
    return torch.Generator().manual_seed(1000 + b)


def _pair(b, target="normal"):
    g = _g(b)
    x = torch.randn(b, 5, generator=g)
    if target == "sign":
        t = torch.randint(0, 2, (b, 5), generator=g).float() * 2 - 1
    elif target == "unit":
        t = torch.rand(b, 5, generator=g)
    else:
        t = torch.randn(b, 5, generator=g)
    return x, t


def _classes(b):
    g = _g(b)
    t = torch.randint(C, (b,), generator=g)
    t[0] = -100  # an ignored row
    return torch.randn(b, C, generator=g), t


def _ctc(b):
    g = _g(b)
    T, S = 10, 4  # no size equal to the first batch (3): duck sizing would tie them
    log_probs = torch.randn(T, b, 5, generator=g).log_softmax(2)
    targets = torch.randint(1, 5, (b, S), generator=g)
    input_lengths = torch.full((b,), T)
    target_lengths = torch.randint(0, S + 1, (b,), generator=g)
    return (log_probs, targets, input_lengths, target_lengths), {}, (1, 0, 0, 0)


def _grpo(b):
    g = _g(b)
    logps = torch.randn(b, 6, generator=g) - 2
    mask = torch.rand(b, 6, generator=g) > 0.3
    return ((logps, torch.randn(b, generator=g), mask, logps + 0.1, logps - 0.1),
            {"beta": 0.04, "loss_type": "grpo"}, (0, 0, 0, 0, 0))


def _linear_grpo(b):
    g = _g(b)
    ids = torch.randint(C, (b, 6), generator=g)
    return ((torch.randn(b, 6, 8, generator=g), torch.randn(C, 8, generator=_g(1)), ids,
             torch.randn(b, generator=g), torch.rand(b, 6, generator=g) > 0.3),
            {"loss_type": "bnpo", "chunk_size": 5}, (0, None, 0, 0, 0))


def _linear_dpo(b):
    # The batch is the chosen completions then the rejected ones: 2 * b rows, of 4 tokens (no size
    # equal to another at the first batch, 3: duck sizing would tie them).
    g = _g(b)
    return ((torch.randn(2 * b, 4, 8, generator=g), torch.randn(C, 8, generator=_g(1)),
             torch.randint(C, (2 * b, 4), generator=g), torch.rand(2 * b, 4, generator=g) > 0.3,
             torch.randn(b, generator=g), torch.randn(b, generator=g)),
            {"beta": 0.2}, ((0, 2), None, (0, 2), (0, 2), 0, 0))


def _pointwise(target="normal", extra=()):
    def sample(b):
        x, t = _pair(b, target)
        return (x, t, *extra), {}, (0, 0) + (None,) * len(extra)
    return sample


def _cross_entropy(b):
    x, t = _classes(b)
    return (x, t), {"label_smoothing": 0.1, "z_loss": 1e-3}, (0, 0)


def _multilabel_margin(b):
    g = _g(b)
    t = torch.randint(5, (b, 5), generator=g)
    t[:, 2] = -1
    return (torch.randn(b, 5, generator=g), t), {}, (0, 0)


SAMPLES = {
    "mse_loss": _pointwise(),
    "l1_loss": _pointwise(),
    "huber_loss": _pointwise(extra=("mean", 0.5)),
    "smooth_l1_loss": _pointwise(extra=("sum", 0.5)),
    "soft_margin_loss": _pointwise("sign"),
    "hinge_embedding_loss": _pointwise("sign"),
    "hinge_loss": _pointwise("sign"),
    "kl_div": _pointwise("unit"),
    "poisson_nll_loss": _pointwise("unit"),
    "sigmoid_focal_loss": _pointwise("unit", extra=(0.25, 2.0, "mean")),
    "binary_cross_entropy_with_logits": _pointwise("unit"),
    "multilabel_soft_margin_loss": _pointwise("unit"),
    "binary_cross_entropy": lambda b: ((torch.rand(b, 5, generator=_g(b)) * 0.9 + 0.05,
                                        torch.rand(b, 5, generator=_g(b + 1))), {}, (0, 0)),
    "gaussian_nll_loss": lambda b: ((*_pair(b), torch.rand(b, 5, generator=_g(b)) + 0.1), {},
                                    (0, 0, 0)),
    "margin_ranking_loss": lambda b: ((torch.randn(b, generator=_g(b)), torch.randn(b),
                                       torch.randint(0, 2, (b,), generator=_g(b)).float() * 2 - 1),
                                      {}, (0, 0, 0)),
    "cosine_embedding_loss": lambda b: ((torch.randn(b, 6, generator=_g(b)), torch.randn(b, 6),
                                         torch.randint(0, 2, (b,), generator=_g(b)).float() * 2 - 1),
                                        {}, (0, 0, 0)),
    "triplet_margin_loss": lambda b: ((torch.randn(b, 6, generator=_g(b)), torch.randn(b, 6),
                                       torch.randn(b, 6)), {}, (0, 0, 0)),
    "cross_entropy": _cross_entropy,
    "cross_entropy_with_z_loss": _cross_entropy,
    "nll_loss": lambda b: ((_classes(b)[0].log_softmax(1), _classes(b)[1]), {}, (0, 0)),
    "multi_margin_loss": lambda b: ((_classes(b)[0], _classes(b)[1].clamp(min=0)), {}, (0, 0)),
    "multilabel_margin_loss": _multilabel_margin,
    "jensen_shannon_divergence": lambda b: ((_classes(b)[0], torch.randn(b, C)), {}, (0, 0)),
    "linear_cross_entropy": lambda b: ((torch.randn(b, 8, generator=_g(b)),
                                        torch.randn(C, 8, generator=_g(1)), _classes(b)[1]),
                                       {"chunk_size": 4}, (0, None, 0)),
    "ctc_loss": _ctc,
    "linear_log_probs": lambda b: ((torch.randn(b, 8, generator=_g(b)),
                                    torch.randn(C, 8, generator=_g(1)), _classes(b)[1]),
                                   {"temperature": 0.8, "chunk_size": 4}, (0, None, 0)),
    "linear_jsd": lambda b: ((torch.randn(b, 8, generator=_g(b)), torch.randn(C, 8, generator=_g(1)),
                              torch.randn(b, 6, generator=_g(b + 1)), torch.randn(C, 6, generator=_g(2)),
                              _classes(b)[1]), {"beta": 0.3, "chunk_size": 4}, (0, None, 0, None, 0)),
    "linear_kl_div": lambda b: ((torch.randn(b, 8, generator=_g(b)),
                                 torch.randn(C, 8, generator=_g(1)), torch.randn(b, C)), {},
                                (0, None, 0)),
    "dpo_loss": lambda b: (tuple(torch.randn(b, generator=_g(b + i)) for i in range(4)),
                           {"loss_type": "sigmoid"}, (0, 0, 0, 0)),
    "grpo_loss": _grpo,
    "linear_dpo_loss": _linear_dpo,
    "linear_grpo_loss": _linear_grpo,
    # What the metrics run (fusedloss.metrics): counting, moments, threshold histograms, calibration bins.
    "_classification_counts": lambda b: ((_classes(b)[0], _classes(b)[1].clamp(min=0),
                                          "multiclass", C), {}, (0, 0, None, None)),
    "_regression_moments": lambda b: ((torch.randn(b, generator=_g(b)), torch.randn(b)), {},
                                      (0, 0)),
    "_threshold_histogram": lambda b: ((torch.rand(b, generator=_g(b)),
                                        torch.randint(0, 2, (b,), generator=_g(b)),
                                        torch.linspace(0, 1, 11, dtype=torch.float64), "binary"), {},
                                       (0, 0, None, None)),
    "_calibration_bins": lambda b: ((torch.rand(b, generator=_g(b)),
                                     torch.randint(0, 2, (b,), generator=_g(b)), "binary", 10, None, None),
                                    {}, (0, 0, None, None, None, None)),
}

# Ops whose class (or feature) count may change too: function(batch, classes) -> (args, kwargs,
# per argument None or {dimension: "batch" | "classes"}). The metrics' class count is an int
# argument (a constant of the graph): not here.
B, K = {0: "batch"}, {0: "batch", 1: "classes"}


def _class_rows(b, c):
    g = _g(b * 100 + c)
    t = torch.randint(c, (b,), generator=g)
    t[0] = -100
    return torch.randn(b, c, generator=g), t


def _ctc_classes(b, c):
    g = _g(b * 100 + c)
    log_probs = torch.randn(10, b, c, generator=g).log_softmax(2)
    targets = torch.randint(1, c, (b, 4), generator=g)
    lengths = (torch.full((b,), 10), torch.randint(0, 5, (b,), generator=g))
    return ((log_probs, targets, *lengths), {},
            ({1: "batch", 2: "classes"}, B, B, B))


def _multilabel_classes(b, c):
    g = _g(b * 100 + c)
    t = torch.randint(c, (b, c), generator=g)
    t[:, 1] = -1
    return (torch.randn(b, c, generator=g), t), {}, (K, K)


CLASS_SAMPLES = {
    "mse_loss": lambda b, c: ((torch.randn(b, c), torch.randn(b, c)), {}, (K, K)),
    "cross_entropy": lambda b, c: (_class_rows(b, c), {"label_smoothing": 0.1}, (K, B)),
    "nll_loss": lambda b, c: ((_class_rows(b, c)[0].log_softmax(1), _class_rows(b, c)[1]), {},
                              (K, B)),
    "multi_margin_loss": lambda b, c: ((_class_rows(b, c)[0], _class_rows(b, c)[1].clamp(min=0)),
                                       {}, (K, B)),
    "multilabel_margin_loss": _multilabel_classes,
    "jensen_shannon_divergence": lambda b, c: ((_class_rows(b, c)[0], torch.randn(b, c)), {},
                                               (K, K)),
    "linear_cross_entropy": lambda b, c: ((torch.randn(b, 8), torch.randn(c, 8),
                                           _class_rows(b, c)[1]), {}, (B, {0: "classes"}, B)),
    "ctc_loss": _ctc_classes,
}

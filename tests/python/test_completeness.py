"""Every public op of torch.ops.fusedloss reaches every front-end: the Python functional API,
fusedloss.nn, the C++ functional and module APIs, the module-swap helper, the test tables and the
README's API table. Driven by the ops the library registers, so a new op that misses one fails."""

import importlib
import os
import re

import pytest
import torch

import fusedloss

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

# op -> (fusedloss.nn module, C++ module, the torch.nn module replace_losses swaps, or None where
# torch has none). Every public op must be here or in NOT_LOSSES.
FRONT_ENDS = {
    "mse_loss": ("MSELoss", "MSELoss", torch.nn.MSELoss),
    "l1_loss": ("L1Loss", "L1Loss", torch.nn.L1Loss),
    "huber_loss": ("HuberLoss", "HuberLoss", torch.nn.HuberLoss),
    "smooth_l1_loss": ("SmoothL1Loss", "SmoothL1Loss", torch.nn.SmoothL1Loss),
    "poisson_nll_loss": ("PoissonNLLLoss", "PoissonNLLLoss", torch.nn.PoissonNLLLoss),
    "kl_div": ("KLDivLoss", "KLDivLoss", torch.nn.KLDivLoss),
    "jensen_shannon_divergence": ("JSDLoss", "JSDLoss", None),
    "gaussian_nll_loss": ("GaussianNLLLoss", "GaussianNLLLoss", torch.nn.GaussianNLLLoss),
    "margin_ranking_loss": ("MarginRankingLoss", "MarginRankingLoss", torch.nn.MarginRankingLoss),
    "cosine_embedding_loss": ("CosineEmbeddingLoss", "CosineEmbeddingLoss",
                              torch.nn.CosineEmbeddingLoss),
    "triplet_margin_loss": ("TripletMarginLoss", "TripletMarginLoss", torch.nn.TripletMarginLoss),
    "multilabel_soft_margin_loss": ("MultiLabelSoftMarginLoss", "MultiLabelSoftMarginLoss",
                                    torch.nn.MultiLabelSoftMarginLoss),
    "binary_cross_entropy": ("BCELoss", "BCELoss", torch.nn.BCELoss),
    "binary_cross_entropy_with_logits": ("BCEWithLogitsLoss", "BCEWithLogitsLoss",
                                         torch.nn.BCEWithLogitsLoss),
    "sigmoid_focal_loss": ("SigmoidFocalLoss", "SigmoidFocalLoss", None),  # torchvision's
    "soft_margin_loss": ("SoftMarginLoss", "SoftMarginLoss", torch.nn.SoftMarginLoss),
    "hinge_embedding_loss": ("HingeEmbeddingLoss", "HingeEmbeddingLoss",
                             torch.nn.HingeEmbeddingLoss),
    "hinge_loss": ("HingeLoss", "HingeLoss", None),
    "cross_entropy": ("CrossEntropyLoss", "CrossEntropyLoss", torch.nn.CrossEntropyLoss),
    "nll_loss": ("NLLLoss", "NLLLoss", torch.nn.NLLLoss),
    "multi_margin_loss": ("MultiMarginLoss", "MultiMarginLoss", torch.nn.MultiMarginLoss),
    "multilabel_margin_loss": ("MultiLabelMarginLoss", "MultiLabelMarginLoss",
                               torch.nn.MultiLabelMarginLoss),
    "ctc_loss": ("CTCLoss", "CTCLoss", torch.nn.CTCLoss),
    # torch's LinearCrossEntropyLoss exists from torch 2.13 (None before: nothing to swap).
    "linear_cross_entropy": ("LinearCrossEntropyLoss", "LinearCrossEntropyLoss",
                             getattr(torch.nn, "LinearCrossEntropyLoss", None)),
}
# Public ops exempt from some front-ends, with the reason.
NO_MODULE = {
    "cross_entropy_with_z_loss": "the (loss, z_loss) pair of cross_entropy, for logging; "
                                 "CrossEntropyLoss is its module",
    "linear_log_probs": "per-token log-probabilities and entropy, not a loss",
    "linear_jsd": "takes the student's and the teacher's heads, called as a function",
    "linear_kl_div": "linear_jsd with beta = 0, called as a function",
    # Post-training objectives: functions of several named tensors, called as TRL's trainers
    # compute them; a module would hold nothing but its keyword arguments.
    "dpo_loss": "a preference objective on sequence log-probabilities, called as a function",
    "grpo_loss": "an RL objective on per-token log-probabilities, called as a function",
    "linear_dpo_loss": "dpo_loss from the LM head, called as a function",
    "linear_grpo_loss": "grpo_loss from the LM head, called as a function",
}
NOT_LOSSES = {
    "check_errors": "error control (fusedloss.check_errors), not a loss",
    "set_synchronous_errors": "error control (fusedloss.set_synchronous_errors), not a loss",
    "cpu_cache_clear": "CPU gradient cache control (fusedloss.cpu_cache_clear), not a loss",
    "set_cpu_cache_limit": "CPU gradient cache control (fusedloss.set_cpu_cache_limit), not a loss",
    "cpu_cache_bytes": "CPU gradient cache control (fusedloss.cpu_cache_bytes), not a loss",
}
# Losses tested in their own module rather than in the shared tables.
OWN_TEST_MODULE = {
    "linear_cross_entropy": "test_linear_cross_entropy.py (its call takes a weight matrix)",
    "ctc_loss": "test_ctc_loss.py (its call takes targets and lengths)",
    "linear_log_probs": "test_post_training.py (the post-training heads)",
    "linear_jsd": "test_post_training.py (the post-training heads)",
    "linear_kl_div": "test_post_training.py (the post-training heads)",
    "dpo_loss": "test_post_training.py (the post-training heads)",
    "grpo_loss": "test_post_training.py (the post-training heads)",
    "linear_dpo_loss": "test_post_training.py (the post-training heads)",
    "linear_grpo_loss": "test_post_training.py (the post-training heads)",
}
TEST_MODULES = ["test_regression_losses", "test_binary_losses", "test_multiclass_losses",
                "test_embedding_losses", "test_multilabel_margin", "test_distillation",
                "test_bad_input_and_edges"]
# torch.nn losses with no fusedloss drop-in, with the reason.
NOT_SWAPPED = {}


def public_ops():
    names = {n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
             if n.startswith("fusedloss::")}
    return sorted(n for n in names if not n.startswith("_"))


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def test_every_public_op_is_listed():
    listed = set(FRONT_ENDS) | set(NO_MODULE) | set(NOT_LOSSES)
    assert set(public_ops()) == listed, (
        "add the op to FRONT_ENDS (or an exemption with its reason); "
        f"unlisted: {sorted(set(public_ops()) - listed)}, gone: {sorted(listed - set(public_ops()))}")


LOSS_OPS = [op for op in public_ops() if op not in NOT_LOSSES] or ["(no ops)"]


@pytest.mark.parametrize("op", LOSS_OPS)
def test_python_functional(op):
    assert callable(getattr(fusedloss.functional, op, None)), f"fusedloss.functional.{op} is missing"


@pytest.mark.parametrize("op", LOSS_OPS)
def test_python_module_and_swap(op):
    if op in NO_MODULE:
        return
    module, _, torch_module = FRONT_ENDS[op]
    ours = getattr(fusedloss.nn, module, None)
    assert ours is not None, f"fusedloss.nn.{module} is missing"
    if torch_module is not None:
        assert issubclass(ours, torch_module)
        assert fusedloss.nn.DROP_INS.get(torch_module) is ours, f"replace_losses misses {module}"


def torch_nn_losses():
    return sorted(name for name in dir(torch.nn) if isinstance(getattr(torch.nn, name), type)
                  and issubclass(getattr(torch.nn, name), torch.nn.modules.loss._Loss))


@pytest.mark.parametrize("name", torch_nn_losses())
def test_every_torch_nn_loss_has_a_drop_in(name):
    if name in NOT_SWAPPED:
        return
    torch_class = getattr(torch.nn, name)
    ours = fusedloss.nn.DROP_INS.get(torch_class)
    assert ours is not None, f"fusedloss.nn has no drop-in for torch.nn.{name} (replace_losses skips it)"
    assert issubclass(ours, torch_class) and ours.__name__ == name and getattr(fusedloss.nn, name) is ours


@pytest.mark.parametrize("op", LOSS_OPS)
def test_cpp_api(op):
    functional = read("csrc", "fusedloss", "functional.h")
    assert re.search(rf"^inline [^\n]*\b{op}\(", functional, re.M), \
        f"fusedloss::functional::{op} is missing from csrc/fusedloss/functional.h"
    if op in NO_MODULE:
        return
    module = FRONT_ENDS[op][1]
    modules = read("csrc", "fusedloss", "modules.h")
    assert (re.search(rf"FUSEDLOSS_POINTWISE_MODULE\({module},", modules)
            or re.search(rf"TORCH_MODULE\({module}\)", modules)), \
        f"fusedloss::nn::{module} is missing from csrc/fusedloss/modules.h"


@pytest.mark.parametrize("op", LOSS_OPS)
def test_test_tables(op):
    if op in OWN_TEST_MODULE:
        return
    keys = set()
    for name in TEST_MODULES:
        module = importlib.import_module(name)
        for table in ("LOSSES", "OPS"):
            keys |= set(getattr(module, table, {}))
    assert any(k == op or k.startswith(op + "_") for k in keys), \
        f"{op} is in no table of {TEST_MODULES} (values against torch, opcheck, bad input)"


@pytest.mark.parametrize("op", LOSS_OPS)
def test_readme_api_table(op):
    readme = read("README.md")
    api = readme[readme.index("## API"):readme.index("Formulas,")]
    rows = [line for line in api.splitlines() if line.startswith("|")]
    assert any(f"`{op}(" in row for row in rows), f"README's API table has no row for {op}"


@pytest.mark.parametrize("op", LOSS_OPS)
def test_export_and_inductor_samples(op):
    from op_samples import SAMPLES
    assert op in SAMPLES, f"{op} has no sample call in tests/python/op_samples.py (export, Inductor)"

"""Forward+backward of the pointwise losses: fusedloss vs torch eager vs torch.compile of the torch
loss (for focal and hinge, torch's formula in plain ops), in one run, float32.

    python benchmarks/bench_pointwise.py [--device cpu|cuda] [--sizes 1M 16M] [--losses mse_loss ...]

Reports the median time, the speed-up, the achieved bandwidth of fusedloss counted as the bytes a
single fused pass must move (read input and target, write the gradient: 12 B/element) as a share
of a plain copy measured in the same run, and the bytes each keeps for backward. Writes
benchmarks/results/pointwise_<device>.md and .csv.
"""

import argparse
import warnings

import torch
import torch.nn.functional as F

import fusedloss
from common import (copy_bandwidth, machine_description, median_seconds, peak_cuda_bytes,
                    saved_bytes, write_results)

FL = fusedloss.functional
CLASSES = 16  # inputs are (n / CLASSES, CLASSES): pos_weight is per class


def focal_reference(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss in plain torch ops (~10 ops)."""
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def hinge_reference(input, target, margin=1.0, reduction="mean"):
    loss = (margin - target * input).clamp_min(0)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def regression_inputs(n, device):
    return torch.randn(n, device=device), torch.randn(n, device=device), {}


def logit_inputs(n, device):
    x = torch.randn(n // CLASSES, CLASSES, device=device) * 2
    return x, torch.rand_like(x).round(), {}


def probability_inputs(n, device):
    x, t, options = logit_inputs(n, device)
    return torch.sigmoid(x), t, options


def pos_weight_inputs(n, device):
    x, t, _ = logit_inputs(n, device)
    return x, t, {"pos_weight": torch.rand(CLASSES, device=device) * 4}


def distribution_inputs(n, device):
    """Rows of log-probabilities and of target probabilities (kl_div)."""
    x, _, _ = logit_inputs(n, device)
    return torch.log_softmax(x, 1), torch.softmax(torch.randn_like(x), 1), {}


def ranking_inputs(n, device):
    """Two score tensors and +-1 labels (margin_ranking_loss: a third operand)."""
    x, t, _ = logit_inputs(n, device)
    return x, torch.randn_like(x), {"target": t * 2 - 1}


def gaussian_inputs(n, device):
    """Means, targets and one variance per sample (gaussian_nll_loss: a third operand)."""
    x, _, _ = logit_inputs(n, device)
    return x, torch.randn_like(x), {"var": torch.rand(x.shape[0], device=device) + 0.1}


def cosine_inputs(n, device):
    """Pairs of rows of 16 and +-1 labels per row (cosine_embedding_loss)."""
    x, t, _ = logit_inputs(n, device)
    return x, torch.randn_like(x), {"target": t[:, 0] * 2 - 1}


def triplet_inputs(n, device):
    """Triplets of rows of 16, all three taking a gradient, as when one network embeds them
    (triplet_margin_loss: a third operand, and three gradients)."""
    x, _, _ = logit_inputs(n, device)
    positive, negative = (torch.randn_like(x).requires_grad_() for _ in range(2))
    return x, positive, {"negative": negative}


def multilabel_inputs(n, device):
    """Rows of 16 scores, each with three labels then -1 (multilabel_margin_loss)."""
    x, _, _ = logit_inputs(n, device)
    target = torch.argsort(torch.rand_like(x), 1)
    target[:, 3] = -1
    return x, target, {}


def sign_inputs(n, device):
    x, t, _ = logit_inputs(n, device)
    return x, t * 2 - 1, {}


# name -> (fusedloss, torch, inputs(n, device) -> (input, target, keyword arguments))
LOSSES = {
    "mse_loss": (FL.mse_loss, F.mse_loss, regression_inputs),
    "l1_loss": (FL.l1_loss, F.l1_loss, regression_inputs),
    "huber_loss": (FL.huber_loss, F.huber_loss, regression_inputs),
    "smooth_l1_loss": (FL.smooth_l1_loss, F.smooth_l1_loss, regression_inputs),
    "binary_cross_entropy": (FL.binary_cross_entropy, F.binary_cross_entropy, probability_inputs),
    "bce_with_logits+pos_weight": (FL.binary_cross_entropy_with_logits,
                                   F.binary_cross_entropy_with_logits, pos_weight_inputs),
    "sigmoid_focal_loss (mean)": (
        lambda x, t: FL.sigmoid_focal_loss(x, t, reduction="mean"),
        lambda x, t: focal_reference(x, t, reduction="mean"), logit_inputs),
    "soft_margin_loss": (FL.soft_margin_loss, F.soft_margin_loss, sign_inputs),
    "hinge_embedding_loss": (FL.hinge_embedding_loss, F.hinge_embedding_loss, sign_inputs),
    "hinge_loss": (FL.hinge_loss, hinge_reference, sign_inputs),
    "kl_div (batchmean)": (lambda x, t: FL.kl_div(x, t, reduction="batchmean"),
                           lambda x, t: F.kl_div(x, t, reduction="batchmean"), distribution_inputs),
    "margin_ranking_loss": (FL.margin_ranking_loss, F.margin_ranking_loss, ranking_inputs),
    "multilabel_soft_margin_loss": (FL.multilabel_soft_margin_loss, F.multilabel_soft_margin_loss,
                                    logit_inputs),
    "gaussian_nll_loss": (FL.gaussian_nll_loss, F.gaussian_nll_loss, gaussian_inputs),
    "cosine_embedding_loss": (FL.cosine_embedding_loss, F.cosine_embedding_loss, cosine_inputs),
    "triplet_margin_loss": (FL.triplet_margin_loss, F.triplet_margin_loss, triplet_inputs),
    "multilabel_margin_loss": (FL.multilabel_margin_loss, F.multilabel_margin_loss,
                               multilabel_inputs),
}
# read input (4) + target (4), write gradient (4); margin ranking's labels and an input-shaped
# var would add 4 more (not counted: the GB/s of those rows are a lower bound)
BYTES_PER_ELEMENT = 12


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def fwd_bwd(fn, x, y, options):
    def step():
        x.grad = None
        fn(x, y, **options).backward()
    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=["1M", "16M"])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES))
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = args.device
    compiled = {name: torch.compile(ref) for name, (_, ref, _) in LOSSES.items()}
    torch._dynamo.config.cache_size_limit = 64  # one compiled graph per loss and size

    rows = []
    for size_text in args.sizes:
        n = parse_size(size_text)
        copy_bps = copy_bandwidth(n, device)
        for name in args.losses:
            ours, ref, make_inputs = LOSSES[name]
            x, y, options = make_inputs(n, device)
            x.requires_grad_()
            variants = {"fusedloss": ours, "torch eager": ref, "torch.compile": compiled[name]}
            seconds = {k: median_seconds(fwd_bwd(f, x, y, options), device, args.min_run_time)
                       for k, f in variants.items()}
            kept = {k: saved_bytes(lambda: f(x, y, **options))[0] for k, f in variants.items()}
            achieved = BYTES_PER_ELEMENT * n / seconds["fusedloss"]
            row = {
                "loss": name,
                "elements": size_text,
                "fusedloss ms": f"{seconds['fusedloss'] * 1e3:.2f}",
                "torch eager ms": f"{seconds['torch eager'] * 1e3:.2f}",
                "torch.compile ms": f"{seconds['torch.compile'] * 1e3:.2f}",
                "vs eager": f"{seconds['torch eager'] / seconds['fusedloss']:.2f}x",
                "vs compile": f"{seconds['torch.compile'] / seconds['fusedloss']:.2f}x",
                "fusedloss GB/s": f"{achieved / 1e9:.1f}",
                "of copy GB/s": f"{achieved / copy_bps:.0%}",
                "kept for backward (fused / eager / compile)":
                    " / ".join(f"{kept[k] / 2**20:.0f} MiB" for k in variants),
            }
            if device.startswith("cuda"):
                peaks = {k: peak_cuda_bytes(fwd_bwd(f, x, y, options), device)
                         for k, f in variants.items()}
                row["peak (fused / eager / compile)"] = " / ".join(
                    f"{peaks[k] / 2**20:.0f} MiB" for k in variants)
            rows.append(row)
            print(row, flush=True)

    header = (f"### Pointwise losses, forward+backward, float32, {device}\n\n"
              f"{machine_description(device)}; median of repeated runs (torch.utils.benchmark). "
              f"GB/s counts the {BYTES_PER_ELEMENT} B/element a single fused pass must move; "
              "'of copy' is that against a plain tensor copy measured in the same run.")
    write_results(f"pointwise_{device.split(':')[0]}", rows, list(rows[0]), header)


if __name__ == "__main__":
    main()

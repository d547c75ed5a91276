"""Forward+backward of the distillation losses (student logits -> gradient; the teacher is a
constant): fusedloss.jensen_shannon_divergence vs the same divergence in plain torch ops, eager and
torch.compile, in one run, float32. beta=0 (forward KL) is also compared with torch's own
F.kl_div on log-softmaxes.

    python benchmarks/bench_distillation.py [--device cpu|cuda] [--shapes 8192x32000]

Reports the median time of a step (loss, backward into the student's .grad), the speed-ups and
the bytes each keeps for backward. Writes benchmarks/results/distillation_<device>.md and .csv.
"""

import argparse
import warnings

import torch
import torch.nn.functional as F

import fusedloss
from common import machine_description, median_seconds, saved_bytes, write_results

FL = fusedloss.functional


def jsd_torch(student, teacher, beta):
    """The generalized JSD in plain torch ops (the oracle of tests/python/test_distillation.py)."""
    x, y = torch.log_softmax(student, -1), torch.log_softmax(teacher, -1)
    q, p = x.exp(), y.exp()
    log_m = torch.log(beta * p + (1 - beta) * q)
    return ((beta * p * (y - log_m) + (1 - beta) * q * (x - log_m)).sum(-1)).mean()


def forward_kl_torch(student, teacher):
    return F.kl_div(torch.log_softmax(student, -1), torch.log_softmax(teacher, -1),
                    reduction="batchmean", log_target=True)


LOSSES = {
    "JSD, beta=0.5": (lambda s, t: FL.jensen_shannon_divergence(s, t, beta=0.5),
                      lambda s, t: jsd_torch(s, t, 0.5)),
    "forward KL, beta=0": (lambda s, t: FL.jensen_shannon_divergence(s, t, beta=0.0),
                           forward_kl_torch),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="+", default=["8192x32000"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    for shape in args.shapes:
        n, c = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        student = torch.randn(n, c, device=args.device).requires_grad_()
        teacher = torch.randn(n, c, device=args.device)
        for name, (ours, reference) in LOSSES.items():
            variants = {"fusedloss": ours, "torch eager": reference,
                        "torch.compile": torch.compile(reference)}

            def step_of(fn):
                def step():
                    student.grad = None
                    fn(student, teacher).backward()
                return step

            ms = {k: median_seconds(step_of(f), args.device) * 1e3 for k, f in variants.items()}
            kept = {k: saved_bytes(lambda: f(student, teacher))[0] for k, f in variants.items()}
            row = {"loss": name, "shape": shape,
                   **{f"{k} ms": f"{v:.1f}" for k, v in ms.items()},
                   "vs eager": f"{ms['torch eager'] / ms['fusedloss']:.2f}x",
                   "vs compile": f"{ms['torch.compile'] / ms['fusedloss']:.2f}x",
                   "kept for backward (fused / eager / compile)":
                       " / ".join(f"{kept[k] / 2**20:.0f} MiB" for k in variants)}
            rows.append(row)
            print(row, flush=True)
    write_results(f"distillation_{args.device}", rows, list(rows[0]),
                  f"Distillation losses forward+backward, float32, 'mean' "
                  f"({machine_description(args.device)})")


if __name__ == "__main__":
    main()

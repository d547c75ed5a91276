"""Forward+backward of nll_loss on log-probabilities (the gradient is one value per row, scattered
into zeros): fusedloss vs torch eager vs torch.compile of F.nll_loss, in one run, float32.

    python benchmarks/bench_nll_loss.py [--device cpu|cuda] [--shapes 65536x10 4096x32000]

Reports the median time of a step (loss, backward into the input's .grad) and the speed-ups.
Writes benchmarks/results/nll_loss_<device>.md and .csv.
"""

import argparse
import warnings

import torch
import torch.nn.functional as F

import fusedloss
from common import machine_description, median_seconds, write_results

FL = fusedloss.functional


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="+", default=["65536x10", "65536x100", "4096x32000"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    variants = {"fusedloss": FL.nll_loss, "torch eager": F.nll_loss,
                "torch.compile": torch.compile(F.nll_loss)}
    rows = []
    for shape in args.shapes:
        n, c = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        log_probs = torch.log_softmax(torch.randn(n, c, device=args.device), 1).requires_grad_()
        target = torch.randint(c, (n,), device=args.device)
        target[::17] = -100

        def step_of(fn):
            def step():
                log_probs.grad = None
                fn(log_probs, target).backward()
            return step

        ms = {k: median_seconds(step_of(f), args.device) * 1e3 for k, f in variants.items()}
        rows.append({"shape": shape, **{f"{k} ms": f"{v:.3f}" for k, v in ms.items()},
                     "vs eager": f"{ms['torch eager'] / ms['fusedloss']:.2f}x",
                     "vs compile": f"{ms['torch.compile'] / ms['fusedloss']:.2f}x"})
    columns = list(rows[0])
    write_results(f"nll_loss_{args.device}", rows, columns,
                  f"nll_loss forward+backward, float32, 'mean' ({machine_description(args.device)})")


if __name__ == "__main__":
    main()

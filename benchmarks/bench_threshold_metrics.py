"""Threshold-free metrics on one batch of N binary scores: fusedloss vs torchmetrics (binned, 200
thresholds: AUROC and average precision) and vs sklearn.metrics (exact AUROC), in one run.

    python benchmarks/bench_threshold_metrics.py [--n 10000000] [--device cpu|cuda]

Reports the median time of each call, the speed-ups and the state each keeps (binned: bytes that
do not depend on N). Writes benchmarks/results/threshold_metrics_<device>.md and .csv.
"""

import argparse
import warnings

import torch

import fusedloss
from common import machine_description, median_seconds, write_results

M = fusedloss.metrics


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torchmetrics.functional.classification as tm  # noqa: PLC0415 (optional dependency)

    g = torch.Generator().manual_seed(0)
    p = torch.rand(args.n, generator=g)
    t = (torch.rand(args.n, generator=g) < p).long()
    preds, target = p.to(args.device), t.to(args.device)
    rows = []

    def both(auroc, ap):
        return lambda: (auroc(), ap())

    ours = median_seconds(both(lambda: M.auroc(preds, target, "binary", thresholds=200),
                               lambda: M.average_precision(preds, target, "binary", thresholds=200)),
                          args.device)
    theirs = median_seconds(both(lambda: tm.binary_auroc(preds, target, thresholds=200),
                                 lambda: tm.binary_average_precision(preds, target, thresholds=200)),
                            args.device)
    metric = M.AUROC("binary", thresholds=200)
    state = sum(b.numel() * b.element_size() for b in metric.buffers())
    rows.append({"metric": "AUROC + AP, binned (200 thresholds)", "N": f"{args.n:,}",
                 "fusedloss ms": f"{ours * 1e3:.1f}", "reference": "torchmetrics",
                 "reference ms": f"{theirs * 1e3:.1f}", "speed-up": f"{theirs / ours:.1f}x",
                 "fusedloss state": f"{state:,} B (any N)"})
    print(rows[-1], flush=True)

    exact = median_seconds(lambda: M.auroc(preds, target, "binary"), args.device)
    try:
        import sklearn.metrics as sk  # noqa: PLC0415

        y, s = t.numpy(), p.numpy()
        reference = median_seconds(lambda: sk.roc_auc_score(y, s), "cpu")
        rows.append({"metric": "AUROC, exact", "N": f"{args.n:,}", "fusedloss ms": f"{exact * 1e3:.1f}",
                     "reference": "sklearn.metrics.roc_auc_score", "reference ms": f"{reference * 1e3:.1f}",
                     "speed-up": f"{reference / exact:.1f}x", "fusedloss state": "every score (as sklearn)"})
        print(rows[-1], flush=True)
    except ImportError:
        pass
    write_results(f"threshold_metrics_{args.device}", rows, list(rows[0]),
                  f"Threshold-free metrics, binary, one batch ({machine_description(args.device)})")


if __name__ == "__main__":
    main()

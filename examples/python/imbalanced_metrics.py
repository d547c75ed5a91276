"""Why accuracy misleads on imbalanced data: a binary problem with about 1% positives, trained
twice — with plain binary cross entropy (fusedloss.nn.BCELoss on sigmoid outputs) and with
fusedloss.nn.BCEWithLogitsLoss(pos_weight=99) — and evaluated with fusedloss.metrics: accuracy,
precision, recall and F1 at the 0.5 threshold (one shared counting state), and the threshold-free
precision-recall curve and its area (average precision, binned: one histogram), all updated
together by one MetricCollection. A model that always answers "negative" is 99% accurate and
finds nothing; the report shows it.

    python examples/python/imbalanced_metrics.py [--out docs/imbalanced_metrics.png]

Needs matplotlib and tqdm (pip install matplotlib tqdm).
"""

import argparse

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import trange  # noqa: E402

import fusedloss  # noqa: E402

FEATURES = 10


def make_data(n, generator):
    """About 1% positives, shifted from the negatives along a few features: findable, not trivial."""
    y = (torch.rand(n, generator=generator) < 0.01).float()
    x = torch.randn(n, FEATURES, generator=generator)
    x[:, :3] += 1.5 * y.unsqueeze(1)
    return x, y


def train(x, y, criterion, on_logits, epochs, seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in trange(epochs, desc=type(criterion).__name__, leave=False):
        for batch in torch.randperm(len(x)).split(512):
            optimizer.zero_grad()
            out = model(x[batch]).squeeze(1)
            criterion(out if on_logits else torch.sigmoid(out), y[batch]).backward()
            optimizer.step()
    return model


@torch.no_grad()
def evaluate(predict, x, y, batch=4096):
    """Streams the test set through one MetricCollection: accuracy, precision, recall and F1 share
    one counting state; the PR curve and average precision share one 200-bin histogram."""
    M = fusedloss.metrics
    metrics = M.MetricCollection({
        "accuracy": M.Accuracy("binary"), "precision": M.Precision("binary"), "recall": M.Recall("binary"),
        "f1": M.F1Score("binary"), "auprc": M.AveragePrecision("binary", thresholds=200),
        "pr_curve": M.PrecisionRecallCurve("binary", thresholds=200)})
    for xb, yb in zip(x.split(batch), y.split(batch)):
        metrics.update(predict(xb), yb.long())
    report = metrics.compute()
    curve = report.pop("pr_curve")
    return {k: v.item() for k, v in report.items()}, curve


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/imbalanced_metrics.png")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x_train, y_train = make_data(100_000, g)
    x_test, y_test = make_data(50_000, g)
    print(f"positives: {y_train.mean().item():.2%} of training, {y_test.mean().item():.2%} of test samples")

    bce = train(x_train, y_train, fusedloss.nn.BCELoss(), False, args.epochs, seed=1)
    weighted = train(x_train, y_train, fusedloss.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(99.0)),
                     True, args.epochs, seed=1)
    reports = {
        'always "negative"': evaluate(lambda xb: torch.zeros(len(xb)), x_test, y_test),
        "BCELoss": evaluate(lambda xb: torch.sigmoid(bce(xb).squeeze(1)), x_test, y_test),
        "BCEWithLogitsLoss(pos_weight=99)": evaluate(lambda xb: torch.sigmoid(weighted(xb).squeeze(1)),
                                                     x_test, y_test),
    }
    for name, (r, _) in reports.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))

    names = ["accuracy", "precision", "recall", "f1", "auprc"]
    fig, (bars_ax, curve_ax) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.6, 1]})
    width = 0.26
    for i, (label, (r, (precision, recall, _))) in enumerate(reports.items()):
        bars = bars_ax.bar([j + (i - 1) * width for j in range(len(names))], [r[k] for k in names], width,
                           label=label)
        bars_ax.bar_label(bars, fmt="%.2f", fontsize=7)
        fusedloss.plots.plot_precision_recall(precision, recall, curve_ax, label=f"{label}: AP {r['auprc']:.2f}")
    bars_ax.set_xticks(range(len(names)), names)
    bars_ax.set_ylim(0, 1.1)
    bars_ax.set_title("1% positives: accuracy is high for every model, even one that finds nothing",
                      fontsize=9)
    bars_ax.legend(fontsize=7, loc="upper right")
    curve_ax.set_title("precision-recall curves (200 thresholds)", fontsize=9)
    curve_ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

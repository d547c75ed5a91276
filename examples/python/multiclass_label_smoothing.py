"""Trains the same small classifier twice on five overlapping 2-D classes — with
fusedloss.nn.CrossEntropyLoss without and with label smoothing (0.2) — and compares them on held-out
data: accuracy, and how confident the model is when it is wrong. Plots both decision maps.

    python examples/python/multiclass_label_smoothing.py [--out docs/multiclass_label_smoothing.png]

Label smoothing asks for probability 1 - eps + eps/C on the true class instead of 1, so the model
stops pushing its logits apart once it is right: accuracy stays, over-confidence goes.
Needs matplotlib and tqdm (pip install matplotlib tqdm).
"""

import argparse

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import trange  # noqa: E402

import fusedloss  # noqa: E402

CLASSES = 5


def make_data(n, generator):
    """Five Gaussian blobs on a circle, close enough to overlap."""
    labels = torch.randint(CLASSES, (n,), generator=generator)
    angle = labels.float() * (2 * torch.pi / CLASSES)
    centers = torch.stack([angle.cos(), angle.sin()], 1) * 2.0
    return centers + 0.9 * torch.randn(n, 2, generator=generator), labels


def train(x, y, label_smoothing, epochs, seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, CLASSES))
    criterion = fusedloss.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in trange(epochs, desc=f"label_smoothing={label_smoothing}", leave=False):
        for batch in torch.randperm(len(x)).split(256):
            optimizer.zero_grad()
            criterion(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model


@torch.no_grad()
def evaluate(model, x, y):
    p = torch.softmax(model(x), 1)
    confidence, predicted = p.max(1)
    wrong = predicted != y
    return {
        "accuracy": (~wrong).float().mean().item(),
        "test loss (no smoothing)": fusedloss.functional.cross_entropy(model(x), y).item(),
        "mean confidence when wrong": confidence[wrong].mean().item(),
        "wrong with > 90% confidence": (confidence[wrong] > 0.9).float().mean().item(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/multiclass_label_smoothing.png")
    parser.add_argument("--epochs", type=int, default=150)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    x_train, y_train = make_data(2000, g)
    x_test, y_test = make_data(4000, g)
    grid = torch.stack(torch.meshgrid(torch.linspace(-5, 5, 200), torch.linspace(-5, 5, 200),
                                      indexing="xy"), -1).view(-1, 2)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, smoothing in zip(axes, (0.0, 0.2)):
        model = train(x_train, y_train, smoothing, args.epochs, seed=1)
        metrics = evaluate(model, x_test, y_test)
        print(f"label_smoothing={smoothing}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        with torch.no_grad():
            confidence, predicted = torch.softmax(model(grid), 1).max(1)
        image = plt.get_cmap("tab10")(predicted.view(200, 200).numpy())
        image[..., 3] = confidence.view(200, 200).numpy() * 0.8  # paler where less sure
        ax.imshow(image, extent=(-5, 5, -5, 5), origin="lower")
        ax.scatter(x_test[:600, 0], x_test[:600, 1], c=y_test[:600], cmap="tab10", vmin=0, vmax=9,
                   s=4, edgecolors="none")
        ax.set_title(f"label_smoothing={smoothing}: accuracy {metrics['accuracy']:.1%},\n"
                     f"wrong with >90% confidence: {metrics['wrong with > 90% confidence']:.0%}",
                     fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("fusedloss.nn.CrossEntropyLoss: colour = predicted class, opacity = confidence",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

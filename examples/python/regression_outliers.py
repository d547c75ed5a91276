"""Fits a line to data with outliers three times — with fusedloss's MSE, L1 (MAE) and Huber
losses — and plots the three fits: MSE is dragged towards the outliers, L1 and Huber are not.

    python examples/python/regression_outliers.py [--out docs/regression_outliers.png] [--steps 1500]

Needs matplotlib and tqdm (pip install matplotlib tqdm).
"""

import argparse

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import trange  # noqa: E402

import fusedloss  # noqa: E402


def make_data(generator):
    x = torch.linspace(-3, 3, 200)
    y = 1.5 * x + 0.5 + 0.3 * torch.randn(200, generator=generator)
    outliers = torch.randperm(200, generator=generator)[:20]
    y[outliers] += 8 + 4 * torch.rand(20, generator=generator)  # 10% of points far above the line
    return x, y


def fit_line(x, y, criterion, steps):
    w = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.05)
    for _ in trange(steps, desc=type(criterion).__name__, leave=False):
        optimizer.zero_grad()
        loss = criterion(w[0] * x + w[1], y)
        loss.backward()
        optimizer.step()
    return w.detach(), loss.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/regression_outliers.png")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()

    x, y = make_data(torch.Generator().manual_seed(0))
    criteria = [fusedloss.nn.MSELoss(), fusedloss.nn.L1Loss(), fusedloss.nn.HuberLoss(delta=1.0)]
    plt.figure(figsize=(7, 4.5))
    plt.scatter(x, y, s=10, color="0.6", label="data (10% outliers)")
    print(f"true line: slope 1.500, intercept 0.500")
    for criterion, color in zip(criteria, ["tab:red", "tab:blue", "tab:green"]):
        w, loss = fit_line(x, y, criterion, args.steps)
        name = type(criterion).__name__
        print(f"{name:>10}: slope {w[0]:.3f}, intercept {w[1]:.3f} (final loss {loss:.3f})")
        plt.plot(x, w[0] * x + w[1], color=color, linewidth=2,
                 label=f"{name}: y = {w[0]:.2f} x + {w[1]:.2f}")
    plt.plot(x, 1.5 * x + 0.5, "k--", linewidth=1, label="true: y = 1.50 x + 0.50")
    plt.title("Line fits with fusedloss: MSE chases the outliers, L1 and Huber do not")
    plt.legend(loc="upper left", fontsize=8)
    plt.tight_layout()
    plt.savefig(args.out, dpi=110)
    print(f"plot saved to {args.out}")


if __name__ == "__main__":
    main()

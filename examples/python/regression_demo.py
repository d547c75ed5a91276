"""Trains one small regression model twice from the same initial weights, with
torch.nn.MSELoss and with fusedloss.nn.MSELoss, and shows the two runs agree step by step.

    python examples/python/regression_demo.py [--epochs 200] [--device cpu|cuda]
"""

import argparse
import copy
import time

import torch

import fusedloss


def make_data(n, generator):
    x = torch.randn(n, 4, generator=generator)
    y = torch.sin(2 * x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3] - 0.3 * x[:, 3:] \
        + 0.05 * torch.randn(n, 1, generator=generator)
    return x, y


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    x, y = (t.to(args.device) for t in make_data(4096, generator))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1))
    runs = {
        "torch.nn.MSELoss": (model.to(args.device), torch.nn.MSELoss()),
        "fusedloss.nn.MSELoss": (copy.deepcopy(model).to(args.device), fusedloss.nn.MSELoss()),
    }
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-2) for name, (m, _) in runs.items()}

    print(f"fusedloss {fusedloss.__version__}, torch {torch.__version__}, device {args.device}")
    print(f"{'epoch':>5} {'torch.nn.MSELoss':>18} {'fusedloss.nn.MSELoss':>22}")
    worst = 0.0
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        losses = {}
        for name, (m, criterion) in runs.items():
            optimizers[name].zero_grad()
            loss = criterion(m(x), y)
            loss.backward()
            optimizers[name].step()
            losses[name] = loss.item()
        a, b = losses.values()
        worst = max(worst, abs(a - b) / max(abs(a), 1e-12))
        if epoch == 1 or epoch % (args.epochs // 10 or 1) == 0:
            print(f"{epoch:>5} {a:>18.6f} {b:>22.6f}")
    print(f"{args.epochs} epochs in {time.perf_counter() - start:.1f} s; "
          f"largest relative difference between the runs: {worst:.2e}")
    if worst > 1e-3:
        raise SystemExit("the two runs disagree")
    print("the two runs agree")


if __name__ == "__main__":
    main()

"""Trains a small model whose forward returns fusedloss losses (regression and 3-class
classification heads) for a few steps, scripts it and saves it.

    python examples/torchscript/script_and_save.py model.pt

Load it anywhere the library is loaded: in Python after `import fusedloss`, in C++ by linking
FusedLoss::fusedloss (see load_scripted.cpp).
"""

import sys

import torch

import fusedloss


class RegressionWithLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.criterion = fusedloss.nn.HuberLoss(delta=0.5)
        self.classifier = torch.nn.Linear(4, 3)
        self.classification = fusedloss.nn.CrossEntropyLoss(label_smoothing=0.1, z_loss=1e-3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        prediction = self.body(x)
        # Both the module and the raw operator, as TorchScript users call them.
        regression = self.criterion(prediction, y) + torch.ops.fusedloss.mse_loss(prediction, y, "mean")
        labels = (y.squeeze(1) * 2.99).long()  # three classes from the regression target
        return regression + self.classification(self.classifier(x), labels)


def example_inputs():
    x = torch.linspace(-1, 1, 64 * 4).reshape(64, 4)
    y = torch.linspace(0, 1, 64).reshape(64, 1)
    return x, y


def main(path, steps=50):
    torch.manual_seed(0)
    model = RegressionWithLoss()
    # Train a little in Python first: forward returns the fused losses, so this is the usual loop.
    x, y = example_inputs()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(x, y)
        loss.backward()
        optimizer.step()
    print(f"trained {steps} steps in Python: loss {loss.item():.4f}")
    scripted = torch.jit.script(model)
    scripted.save(path)
    print(f"saved {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fusedloss_model.pt")

"""Exports a small classifier whose forward returns its fusedloss training losses and evaluation
metrics, with a dynamic batch dimension, and compiles it with AOTInductor into a .pt2 package
that runs with no Python (run_pt2.cpp) or from Python (torch._inductor.aoti_load_package).

    python3 examples/export/export_and_package.py model.pt2 && build/examples/export/run_pt2 model.pt2

The fusedloss ops stay calls to torch.ops.fusedloss.* in the package (AOTInductor's proxy
executor reaches them through the dispatcher), so the process that runs it must have the
library loaded: `import fusedloss` in Python, linking FusedLoss::fusedloss in C++. Prints the
eager outputs for the fixed inputs that run_pt2.cpp also uses.
"""

import sys

import torch

import fusedloss

CLASSES = 3


class ScoredClassifier(torch.nn.Module):
    """forward(x, y) -> (cross entropy, MSE of the probabilities against one-hot targets,
    accuracy, macro F1): what an evaluation pipeline reports for a batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, CLASSES)

    def forward(self, x, y):
        logits = self.linear(x)
        one_hot = torch.nn.functional.one_hot(y, CLASSES).to(logits.dtype)
        return (fusedloss.functional.cross_entropy(logits, y),
                fusedloss.functional.mse_loss(logits.softmax(1), one_hot),
                fusedloss.metrics.accuracy(logits, y, task="multiclass", num_classes=CLASSES),
                fusedloss.metrics.f1_score(logits, y, task="multiclass", num_classes=CLASSES,
                                           average="macro"))


def example_inputs(batch=64):
    """The inputs run_pt2.cpp builds too."""
    x = torch.linspace(-2, 2, batch * 4).reshape(batch, 4).sin() * 3
    y = torch.arange(batch) % CLASSES
    return x, y


def build_package(path, device="cpu"):
    model = ScoredClassifier().eval().to(device)
    batch = torch.export.Dim("batch", min=2, max=1 << 20)
    inputs = tuple(t.to(device) for t in example_inputs())
    program = torch.export.export(model, inputs, dynamic_shapes=({0: batch}, {0: batch}))
    return torch._inductor.aoti_compile_and_package(program, package_path=path)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "model.pt2"
    build_package(path)
    with torch.no_grad():
        values = ScoredClassifier().eval()(*example_inputs())
    print(f"wrote {path}")
    print("eager " + " ".join(f"{v.item():.9g}" for v in values))


if __name__ == "__main__":
    main()

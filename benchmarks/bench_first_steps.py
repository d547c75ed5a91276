"""The first steps of a fresh process on the CPU: forward+backward of mse_loss at 16M float32
elements and cross_entropy at (4096, 32000), each method in a child process of its own, every step
timed (step 1 includes one-time work: torch.compile's compilation, first touches of memory).

    python3 benchmarks/bench_first_steps.py [--steps 20]

A training loop starts with these steps, and short jobs or evaluation loops may never leave them:
steady-state medians alone hide them. Writes benchmarks/results/first_steps_cpu.md and .csv.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from common import machine_description, write_results

CASES = {
    "mse_loss 16M": lambda: (torch.randn(16 << 20, requires_grad=True), torch.randn(16 << 20)),
    "cross_entropy (4096, 32000)": lambda: (
        (torch.randn(4096, 32000) * 2).requires_grad_(), torch.randint(32000, (4096,))),
}
METHODS = ["fusedloss", "torch eager", "torch.compile"]


def loss_function(case, method):
    if method == "fusedloss":
        import fusedloss
        fused = fusedloss.functional
        return fused.mse_loss if case.startswith("mse") else fused.cross_entropy
    reference = F.mse_loss if case.startswith("mse") else F.cross_entropy
    return torch.compile(reference) if method == "torch.compile" else reference


def child(case, method, steps):
    """Runs in a fresh process: prints the milliseconds of each step as JSON."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    x, target = CASES[case]()
    fn = loss_function(case, method)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        x.grad = None
        fn(x, target).backward()
        times.append((time.perf_counter() - start) * 1e3)
    print(json.dumps(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.steps)
    rows = []
    for case in CASES:
        for method in METHODS:
            out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child",
                                  case, method], capture_output=True, text=True, check=True)
            times = json.loads(out.stdout.strip().splitlines()[-1])
            row = {"case": case, "method": method,
                   "step 1 ms": f"{times[0]:.1f}",
                   "steps 2-5 ms": " / ".join(f"{t:.1f}" for t in times[1:5]),
                   "steps 6-20: max / median ms": f"{max(times[5:]):.1f} / "
                                                  f"{statistics.median(times[5:]):.1f}",
                   "all steps ms": " ".join(f"{t:.1f}" for t in times)}
            rows.append(row)
            print(row, flush=True)
    header = ("### First steps of a fresh process, forward+backward, float32, cpu\n\n"
              f"{machine_description('cpu')}; each method in its own fresh process, every step "
              "timed (x.grad = None, loss, backward). Step 1 includes one-time work (torch.compile "
              "compiles there).")
    write_results("first_steps_cpu", rows, list(rows[0]), header)


if __name__ == "__main__":
    main()

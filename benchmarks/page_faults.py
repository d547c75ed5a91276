"""Page faults per forward+backward step at 16M float32 elements: fusedloss (whose large gradient
buffers use transparent huge pages) vs torch eager and torch.compile of F.mse_loss. On the CPU,
faulting in a fresh 64 MiB gradient every step is most of a memory-bound loss's time.

    python3 benchmarks/page_faults.py
"""

import resource
import time
import warnings

import torch
import torch.nn.functional as F

import fusedloss


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(step, steps):
    faults, start = minor_faults(), time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e3, (minor_faults() - faults) / steps


def measure(name, step):
    step()  # compilation for torch.compile
    # The first steps include the kernel assembling huge pages; then the steady state.
    first_ms, _ = timed(step, 10)
    timed(step, 20)
    steady_ms, faults = timed(step, 20)
    print(f"| {name} | {first_ms:.1f} | {steady_ms:.1f} | {faults:.0f} |")


def main():
    warnings.filterwarnings("ignore")
    n = 16 << 20
    x = torch.randn(n, requires_grad=True)
    y = torch.randn(n)
    compiled = torch.compile(F.mse_loss)
    variants = {"fusedloss.functional.mse_loss": fusedloss.functional.mse_loss,
                "torch eager F.mse_loss": F.mse_loss, "torch.compile(F.mse_loss)": compiled}
    print("| forward+backward, 16M float32 | ms per step, steps 2-11 | ms per step, steps 32-51 "
          "| minor page faults per step |")
    print("|---|---|---|---|")
    for name, fn in variants.items():
        def step(fn=fn):
            x.grad = None
            fn(x, y).backward()
        measure(name, step)


if __name__ == "__main__":
    main()

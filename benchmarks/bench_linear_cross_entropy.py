"""Forward+backward of a language-model head, logits = hidden @ W.T followed by cross entropy:
fusedloss.linear_cross_entropy (chunked, logits never materialized) vs the unfused torch path
F.cross_entropy(F.linear(...)) and, where the installed torch has it, torch's own chunked
F.linear_cross_entropy. One run, float32.

    python benchmarks/bench_linear_cross_entropy.py [--device cpu|cuda] [--shape 8192x1024x32000]

Reports the median step time (loss and backward into input.grad and weight.grad) and the extra
memory at the step's peak: above the inputs (hidden, W, targets), and above the inputs and the
gradients of input and weight (which every method must produce). Writes
benchmarks/results/linear_cross_entropy_<device>.md and .csv.
"""

import argparse
import warnings

import torch
import torch.nn.functional as F

import fusedloss
from common import (machine_description, median_step_seconds, peak_cuda_bytes, peak_rss_bytes,
                    run_for_cpu_peak, write_results)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="8192x1024x32000", help="N x H x V")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)  # child process: one CPU peak
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = args.device
    n, h, v = (int(s) for s in args.shape.split("x"))
    torch.manual_seed(0)
    hidden = torch.randn(n, h, device=device).requires_grad_()
    weight = (torch.randn(v, h, device=device) / h ** 0.5).requires_grad_()
    target = torch.randint(v, (n,), device=device)
    target[::17] = -100

    variants = {
        "fusedloss.linear_cross_entropy": lambda: fusedloss.functional.linear_cross_entropy(
            hidden, weight, target),
        "torch unfused (F.linear + F.cross_entropy)": lambda: F.cross_entropy(
            F.linear(hidden, weight), target),
    }
    if hasattr(F, "linear_cross_entropy"):
        options = torch.nn.LinearCrossEntropyOptions()
        variants["torch F.linear_cross_entropy (chunked)"] = lambda: F.linear_cross_entropy(
            hidden, weight, target, options=options)

    def step_of(fn):
        def step():
            hidden.grad = None
            weight.grad = None
            fn().backward()
        return step

    if args.peak_of:  # the child of run_for_cpu_peak
        step = step_of(variants[args.peak_of])
        step()  # warm-up: one-time allocations (and compilation) are not part of a step
        hidden.grad = weight.grad = None  # else the step frees them and hides its own
        print("PEAK", peak_rss_bytes(step))
        return

    gradient_bytes = (hidden.numel() + weight.numel()) * 4
    unfused = "torch unfused (F.linear + F.cross_entropy)"
    results = {}
    for name, fn in variants.items():
        seconds = median_step_seconds(step_of(fn), device, args.repeats)
        if device.startswith("cuda"):
            peak = peak_cuda_bytes(step_of(fn), device)
        else:
            peak = run_for_cpu_peak(["--device", device, "--shape", args.shape, "--peak-of", name])
        results[name] = (seconds, peak)
        print(name, f"{seconds * 1e3:.0f} ms", f"peak {peak:,} B", flush=True)

    rows = []
    for name, (seconds, peak) in results.items():
        extra = max(peak - gradient_bytes, 0)
        rows.append({
            "method": name,
            "ms per step": f"{seconds * 1e3:.0f}",
            "time vs unfused": f"{seconds / results[unfused][0]:.2f}x",
            "peak bytes above inputs": f"{peak:,}",
            "above inputs and gradients": f"{extra:,}",
            "of unfused": f"{extra / max(results[unfused][1] - gradient_bytes, 1):.1%}",
        })
    header = (f"### Linear + cross entropy (LM head), forward+backward, float32, {device}, "
              f"N={n}, H={h}, V={v}\n\n{machine_description(device)}; median of {args.repeats} "
              f"steps after a warm-up; every 17th target ignored. Peak: resident (CPU, measured in a "
              f"child process in which freed memory returns to the system) or allocated (CUDA) "
              f"memory at the step's peak above what was held before it. The gradients of input and "
              f"weight take {gradient_bytes:,} bytes in every method; the logits alone "
              f"would take {n * v * 4:,}.")
    write_results(f"linear_cross_entropy_{device.split(':')[0]}", rows, list(rows[0]), header)


if __name__ == "__main__":
    main()

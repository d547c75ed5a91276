"""Forward+backward of cross entropy on LLM-sized logits: fusedloss vs torch eager vs
torch.compile of F.cross_entropy, in one run, float32.

    python benchmarks/bench_cross_entropy.py [--device cpu|cuda] [--shapes 4096x32000 512x128256]

Reports the median time of a step (loss, backward into logits.grad; a repeat runs it back to
back for about 0.1 s), the speed-ups, and the
memory a step needs above its inputs at its peak (CPU: resident-memory high-water mark; CUDA:
allocator peak) and the bytes each keeps for backward. Writes
benchmarks/results/cross_entropy_<device>.md and .csv.
"""

import argparse
import warnings

import torch
import torch.nn.functional as F

import fusedloss
from common import (event_median_seconds, machine_description, peak_cuda_bytes, peak_rss_bytes,
                    run_for_cpu_peak, saved_bytes, write_results)

FL = fusedloss.functional


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="+", default=["4096x32000", "512x128256"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)  # child process: one CPU peak
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = args.device
    variants = {"fusedloss": FL.cross_entropy, "torch eager": F.cross_entropy,
                "torch.compile": torch.compile(F.cross_entropy)}

    rows = []
    for shape in args.shapes:
        n, c = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        logits = (torch.randn(n, c, device=device) * 2).requires_grad_()
        target = torch.randint(c, (n,), device=device)
        target[::17] = -100  # some ignored tokens, as in padded batches

        def step_of(fn):
            def step():
                logits.grad = None
                fn(logits, target).backward()
            return step

        if args.peak_of:  # the child of run_for_cpu_peak
            step = step_of(variants[args.peak_of])
            step()  # warm-up: one-time allocations (and compilation) are not part of a step
            logits.grad = None
            print("PEAK", peak_rss_bytes(step))
            return
        # A repeat runs a step often enough to last 0.1 s: a 1 ms step timed once is noise.
        seconds = {k: event_median_seconds(step_of(f), device, args.repeats, warmup=3,
                                           repeat_seconds=0.1)
                   for k, f in variants.items()}
        peaks = {}
        for k, f in variants.items():
            logits.grad = None
            if device.startswith("cuda"):
                peaks[k] = peak_cuda_bytes(step_of(f), device)
            else:
                peaks[k] = run_for_cpu_peak(["--device", device, "--shapes", shape, "--peak-of", k])
        kept = {k: saved_bytes(lambda: f(logits, target))[0] for k, f in variants.items()}
        logits.grad = None
        row = {
            "shape": f"({n}, {c})",
            "fusedloss ms": f"{seconds['fusedloss'] * 1e3:.1f}",
            "torch eager ms": f"{seconds['torch eager'] * 1e3:.1f}",
            "torch.compile ms": f"{seconds['torch.compile'] * 1e3:.1f}",
            "vs eager": f"{seconds['torch eager'] / seconds['fusedloss']:.2f}x",
            "vs compile": f"{seconds['torch.compile'] / seconds['fusedloss']:.2f}x",
            "peak bytes above inputs (fused / eager / compile)":
                " / ".join(f"{peaks[k]:,}" for k in variants),
            "kept for backward (fused / eager / compile)":
                " / ".join(f"{kept[k] / 2**20:.0f} MiB" for k in variants),
            "logits MiB": f"{n * c * 4 / 2**20:.0f}",
        }
        rows.append(row)
        print(row, flush=True)

    header = (f"### Cross entropy, forward+backward, float32, {device}\n\n"
              f"{machine_description(device)}; median of {args.repeats} repeats after 3 warm-up steps, "
              "a repeat running the step back to back for about 0.1 s. "
              "Every 17th target is ignore_index. Peak: extra memory at the step's peak above "
              "the logits and targets, resident (CPU, measured in a child process in which freed "
              "memory returns to the system) or allocated (CUDA); the gradient itself is one "
              "logits-sized tensor.")
    write_results(f"cross_entropy_{device.split(':')[0]}", rows, list(rows[0]), header)


if __name__ == "__main__":
    main()

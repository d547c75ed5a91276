"""Forward+backward of the pointwise losses: fusedloss vs torch eager vs torch.compile of the torch
loss, in one run, float32.

    python benchmarks/bench_pointwise.py [--device cpu|cuda] [--sizes 1M 16M] [--losses mse_loss ...]

Reports the median time, the speed-up, the achieved bandwidth of fusedloss counted as the bytes a
single fused pass must move (read input and target, write the gradient: 12 B/element) as a share
of a plain copy measured in the same run, and the bytes each keeps for backward. Writes
benchmarks/results/pointwise_<device>.md and .csv.
"""

import argparse
import warnings

import torch
import torch.nn.functional as F

import fusedloss
from common import (copy_bandwidth, machine_description, median_seconds, peak_cuda_bytes,
                    saved_bytes, write_results)

LOSSES = {
    "mse_loss": (fusedloss.functional.mse_loss, F.mse_loss, {}),
    "l1_loss": (fusedloss.functional.l1_loss, F.l1_loss, {}),
    "huber_loss": (fusedloss.functional.huber_loss, F.huber_loss, {"delta": 1.0}),
    "smooth_l1_loss": (fusedloss.functional.smooth_l1_loss, F.smooth_l1_loss, {"beta": 1.0}),
}
BYTES_PER_ELEMENT = 12  # read input (4) + target (4), write gradient (4)


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def fwd_bwd(fn, x, y, options):
    def step():
        x.grad = None
        fn(x, y, **options).backward()
    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=["1M", "16M"])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES))
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = args.device
    compiled = {name: torch.compile(ref) for name, (_, ref, _) in LOSSES.items()}

    rows = []
    for size_text in args.sizes:
        n = parse_size(size_text)
        copy_bps = copy_bandwidth(n, device)
        x = torch.randn(n, device=device, requires_grad=True)
        y = torch.randn(n, device=device)
        for name in args.losses:
            ours, ref, options = LOSSES[name]
            variants = {"fusedloss": ours, "torch eager": ref, "torch.compile": compiled[name]}
            seconds = {k: median_seconds(fwd_bwd(f, x, y, options), device, args.min_run_time)
                       for k, f in variants.items()}
            kept = {k: saved_bytes(lambda: f(x, y, **options))[0] for k, f in variants.items()}
            achieved = BYTES_PER_ELEMENT * n / seconds["fusedloss"]
            row = {
                "loss": name,
                "elements": size_text,
                "fusedloss ms": f"{seconds['fusedloss'] * 1e3:.2f}",
                "torch eager ms": f"{seconds['torch eager'] * 1e3:.2f}",
                "torch.compile ms": f"{seconds['torch.compile'] * 1e3:.2f}",
                "vs eager": f"{seconds['torch eager'] / seconds['fusedloss']:.2f}x",
                "vs compile": f"{seconds['torch.compile'] / seconds['fusedloss']:.2f}x",
                "fusedloss GB/s": f"{achieved / 1e9:.1f}",
                "of copy GB/s": f"{achieved / copy_bps:.0%}",
                "kept for backward (fused / eager / compile)":
                    " / ".join(f"{kept[k] / 2**20:.0f} MiB" for k in variants),
            }
            if device.startswith("cuda"):
                peaks = {k: peak_cuda_bytes(fwd_bwd(f, x, y, options), device)
                         for k, f in variants.items()}
                row["peak (fused / eager / compile)"] = " / ".join(
                    f"{peaks[k] / 2**20:.0f} MiB" for k in variants)
            rows.append(row)
            print(row, flush=True)

    header = (f"### Pointwise losses, forward+backward, float32, {device}\n\n"
              f"{machine_description(device)}; median of repeated runs (torch.utils.benchmark). "
              f"GB/s counts the {BYTES_PER_ELEMENT} B/element a single fused pass must move; "
              "'of copy' is that against a plain tensor copy measured in the same run.")
    write_results(f"pointwise_{device.split(':')[0]}", rows, list(rows[0]), header)


if __name__ == "__main__":
    main()

"""Forward+backward of ctc_loss: fusedloss vs torch eager vs torch.compile of F.ctc_loss, float32
log-probabilities of a log_softmax, padded targets, 'mean'.

    python3 benchmarks/bench_ctc.py [--device cpu|cuda] [--shapes 500x32x80x100 1000x16x5000x200]

Shapes are T x N x C x S (time steps, batch, classes, padded target length); every input has T
steps and target lengths are drawn from [S/2, S]. Per shape and method, in this process: the
median step (x.grad = None, loss, backward); in a fresh child process per method: the first five
steps (step 1 includes one-time work: torch.compile compiles there, memory is touched first), and
the peak memory of a step above what was held before it, the new input gradient included (CPU:
resident memory, under the malloc settings of common.CPU_PEAK_ENV, fusedloss's gradient cache
emptied first; CUDA: the allocator's peak). Writes
benchmarks/results/ctc_<device>.md and .csv.
"""

import argparse
import json
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from common import (CPU_PEAK_ENV, event_median_seconds, machine_description, peak_cuda_bytes,
                    peak_rss_bytes, synchronize, write_results)

METHODS = ["fusedloss", "torch eager", "torch.compile"]
FIRST_STEPS = 5


def loss_function(method):
    if method == "fusedloss":
        import fusedloss
        return fusedloss.functional.ctc_loss
    return torch.compile(F.ctc_loss) if method == "torch.compile" else F.ctc_loss


def problem(shape, device):
    T, N, C, S = shape
    g = torch.Generator().manual_seed(0)
    log_probs = torch.randn(T, N, C, generator=g).log_softmax(2).to(device).requires_grad_()
    targets = torch.randint(1, C, (N, S), generator=g).to(device)
    input_lengths = torch.full((N,), T, dtype=torch.long)
    target_lengths = torch.randint(S // 2, S + 1, (N,), generator=g)
    return log_probs, targets, input_lengths, target_lengths


def step_of(fn, args):
    log_probs = args[0]

    def step():
        log_probs.grad = None
        fn(*args).backward()
    return step


def child(shape, method, device):
    """Runs in a fresh process: the first steps' milliseconds, then one step's peak memory."""
    warnings.filterwarnings("ignore")
    args = problem(shape, device)
    step = step_of(loss_function(method), args)
    times = []
    for _ in range(FIRST_STEPS):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    args[0].grad = None
    if method == "fusedloss":  # the gradient's block counts in the peak, not in what was held
        import fusedloss
        fusedloss.cpu_cache_clear()
    peak = peak_cuda_bytes(step, device) if device.startswith("cuda") else peak_rss_bytes(step)
    print(json.dumps({"times": times, "peak": peak}))


def fresh_process(shape, method, device):
    env = None
    if not device.startswith("cuda"):
        import os
        env = dict(os.environ, **CPU_PEAK_ENV)
    out = subprocess.run([sys.executable, __file__, "--device", device, "--child",
                          "x".join(map(str, shape)), method],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="+", default=["500x32x80x100", "1000x16x5000x200"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(tuple(int(v) for v in args.child[0].split("x")), args.child[1], args.device)
    warnings.filterwarnings("ignore")
    rows = []
    for text in args.shapes:
        shape = tuple(int(v) for v in text.split("x"))
        inputs = problem(shape, args.device)
        ms = {}
        for method in METHODS:
            step = step_of(loss_function(method), inputs)
            ms[method] = event_median_seconds(step, args.device, args.repeats,
                                              repeat_seconds=0.2) * 1e3
            inputs[0].grad = None
        for method in METHODS:
            fresh = fresh_process(shape, method, args.device)
            rows.append({
                "T x N x C x S": text, "method": method,
                "median step ms": f"{ms[method]:.1f}",
                "fusedloss speed-up": f"{ms[method] / ms['fusedloss']:.2f}x",
                "fresh process steps 1-5 ms": " / ".join(f"{t:.0f}" for t in fresh["times"]),
                "peak MiB of a step": f"{fresh['peak'] / 2**20:.1f}",
            })
            print(rows[-1], flush=True)
    header = (f"### ctc_loss forward+backward, float32, 'mean', {args.device}\n\n"
              f"{machine_description(args.device)}. Median step in one process (the speed-up is "
              "the method's time over fusedloss's); steps 1-5 and the peak memory of a step "
              "above what was held before it, each method in a fresh process.")
    write_results(f"ctc_{args.device}", rows, list(rows[0]), header)


if __name__ == "__main__":
    main()

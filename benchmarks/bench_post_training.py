"""Forward+backward of an RL step's head: per-token log-probabilities and entropy of the sampled
tokens from hidden states and the LM head, loss = -Σ adv · log p - 0.01 Σ entropy (a policy
gradient with an entropy bonus). fusedloss.functional.linear_log_probs against torch's unfused
path (logits = input @ weight.T, log_softmax in float32, gather, entropy), eager and
torch.compile'd.

    python3 benchmarks/bench_post_training.py [--device cpu|cuda] [--shapes 1024x1024x32000]

Shapes are N x H x V. Defaults: CUDA 4096x2048x128256 in bfloat16 (the issue's shape); CPU
1024x1024x32000 in float32 (2 cores: the CUDA shape's unfused step holds 4 GiB of logits and
takes minutes). Per shape and method, in this process: the median step (grads set to None,
loss, backward); in a fresh child process per method: the first five steps, and the peak memory
of a step above what was held before it, and that peak less the input and weight gradients the
step creates ("extra": what the method holds beyond its results; CPU: resident memory under the
malloc settings of common.CPU_PEAK_ENV; CUDA: the allocator's peak). Writes
benchmarks/results/post_training_<device>.md and .csv.
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
ENTROPY_BONUS = 0.01


def unfused(x, w, t, adv):
    log_p = F.log_softmax((x @ w.T).float(), dim=-1)
    picked = log_p.gather(1, t[:, None])[:, 0]
    entropy = -(log_p.exp() * log_p).sum(-1)
    return -(adv * picked).sum() - ENTROPY_BONUS * entropy.sum()


def fused(x, w, t, adv):
    import fusedloss
    picked, entropy = fusedloss.functional.linear_log_probs(x, w, t, return_entropy=True)
    return -(adv * picked).sum() - ENTROPY_BONUS * entropy.sum()


def loss_function(method):
    if method == "fusedloss":
        return fused
    return torch.compile(unfused) if method == "torch.compile" else unfused


def dtype_for(device):
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def problem(shape, device):
    n, h, v = shape
    g = torch.Generator().manual_seed(0)
    dtype = dtype_for(device)
    x = torch.randn(n, h, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(v, h, generator=g) / h ** 0.5).to(device, dtype).requires_grad_()
    t = torch.randint(v, (n,), generator=g).to(device)
    adv = torch.randn(n, generator=g).to(device)
    return x, w, t, adv


def step_of(fn, args):
    x, w = args[0], args[1]

    def step():
        x.grad = w.grad = None
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
    args[0].grad = args[1].grad = None
    if method == "fusedloss":  # the gradients' blocks count in the peak, not in what was held
        import fusedloss
        fusedloss.cpu_cache_clear()
    peak = peak_cuda_bytes(step, device) if device.startswith("cuda") else peak_rss_bytes(step)
    gradients = sum(a.numel() * a.element_size() for a in args[:2])
    print(json.dumps({"times": times, "peak": peak, "extra": peak - gradients}))


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
    parser.add_argument("--shapes", nargs="+")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(tuple(int(v) for v in args.child[0].split("x")), args.child[1], args.device)
    warnings.filterwarnings("ignore")
    shapes = args.shapes or (["4096x2048x128256"] if args.device.startswith("cuda")
                             else ["1024x1024x32000"])
    rows = []
    for text in shapes:
        shape = tuple(int(v) for v in text.split("x"))
        inputs = problem(shape, args.device)
        ms = {}
        for method in METHODS:
            step = step_of(loss_function(method), inputs)
            ms[method] = event_median_seconds(step, args.device, args.repeats,
                                              repeat_seconds=0.2) * 1e3
            inputs[0].grad = inputs[1].grad = None
        del inputs
        fresh = {method: fresh_process(shape, method, args.device) for method in METHODS}
        for method in METHODS:
            rows.append({
                "N x H x V": text, "method": method,
                "median step ms": f"{ms[method]:.1f}",
                "fusedloss speed-up": f"{ms[method] / ms['fusedloss']:.2f}x",
                "fresh process steps 1-5 ms": " / ".join(f"{t:.0f}" for t in fresh[method]["times"]),
                "peak MiB of a step": f"{fresh[method]['peak'] / 2**20:.1f}",
                "extra MiB (peak - gradients)": f"{fresh[method]['extra'] / 2**20:.1f}",
                "extra vs torch eager": (f"{fresh[method]['extra'] / fresh['torch eager']['extra']:.1%}"
                                         if fresh["torch eager"]["extra"] > 0 else "-"),
            })
            print(rows[-1], flush=True)
    header = (f"### RL head (log-probs + entropy of sampled tokens) forward+backward, "
              f"{dtype_for(args.device)}, {args.device}\n\n"
              f"{machine_description(args.device)}. Median step in one process (the speed-up is "
              "the method's time over fusedloss's); steps 1-5 and the peak memory of a step "
              "above what was held before it, each method in a fresh process; 'extra' is that "
              "peak less the input and weight gradients.")
    write_results(f"post_training_{args.device}", rows, list(rows[0]), header)


if __name__ == "__main__":
    main()

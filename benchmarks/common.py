"""Shared pieces of the side-by-side benchmarks: timing, bytes kept for backward, GPU peak memory,
a copy baseline, and writing the Markdown and CSV results."""

import csv
import os
import platform

import torch
from torch.utils import benchmark

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def synchronize(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, device, min_run_time=1.0):
    """Median wall time of fn() over repeated runs (torch.utils.benchmark, all threads)."""
    fn()  # warm-up (and compilation for torch.compile)
    synchronize(device)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def median_step_seconds(step, device, repeats):
    """Median wall time of step() over `repeats` runs after one warm-up (and compilation) run:
    for steps long enough that one run is a measurement."""
    import statistics
    import time
    step()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(numel, device):
    """Bytes per second of a plain copy (read + write) of numel float32 values."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), device)
    return 2 * numel * 4 / seconds


def saved_bytes(fn):
    """Bytes autograd keeps for backward while fn() builds its graph (saved-tensor hooks)."""
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


def peak_cuda_bytes(fn, device):
    """Peak CUDA memory above what was allocated before fn() ran."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def machine_description(device):
    if str(device).startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def write_results(name, rows, columns, header):
    """Writes results/<name>.md (a titled Markdown table) and results/<name>.csv."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, f"{name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS_DIR, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_bytes(fn):
    """Peak resident memory of this process while fn() runs, above what was resident before
    (Linux: the high-water mark is reset through /proc/self/clear_refs). Exact only where freed
    memory goes back to the system: run it under CPU_PEAK_ENV (see run_for_cpu_peak)."""
    import gc
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) * 1024


# glibc keeps freed blocks of up to 32 MiB in its heap for reuse (its dynamic mmap threshold),
# which hides them from resident-memory peaks. With a fixed threshold every block over 64 KiB is
# mapped on allocation and unmapped on free, so the high-water mark counts each step's memory.
CPU_PEAK_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def run_for_cpu_peak(script_args):
    """Runs this benchmark script again in a child process under CPU_PEAK_ENV with script_args
    (which make it print 'PEAK <bytes>'), and returns the bytes."""
    import subprocess
    import sys
    env = dict(os.environ, **CPU_PEAK_ENV)
    out = subprocess.run([sys.executable, sys.argv[0], *script_args], env=env, check=True,
                         capture_output=True, text=True).stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("PEAK ")))



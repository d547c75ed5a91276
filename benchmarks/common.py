"""Shared pieces of the side-by-side benchmarks: timing, bytes kept for backward, GPU peak memory,
a copy baseline, per-variant step measurement under a time budget, and writing the Markdown and
CSV results."""

import csv
import os
import platform
import time

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


def event_median_seconds(step, device, repeats, warmup=2, repeat_seconds=0.02):
    """Median seconds per step() over `repeats` timed repeats, after `warmup` calls (compilation
    happens there). A repeat runs step() k times back to back, k chosen from the fastest warm-up
    so that a repeat lasts about repeat_seconds; on CUDA it is timed with CUDA events around the k
    calls (queued work, as in a training loop), elsewhere with perf_counter."""
    import statistics
    cuda = str(device).startswith("cuda")
    one = repeat_seconds
    for _ in range(warmup):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        one = min(one, time.perf_counter() - start)
    k = max(1, min(100, int(repeat_seconds / max(one, 1e-6))))
    times = []
    for _ in range(repeats):
        if cuda:
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(k):
                step()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3 / k)
        else:
            start = time.perf_counter()
            for _ in range(k):
                step()
            times.append((time.perf_counter() - start) / k)
    return statistics.median(times)


def copy_bytes_per_second(numel, dtype, device, repeats, repeat_seconds=0.02):
    """Bytes read + written per second by dst.copy_(src) of numel values of dtype (preallocated),
    timed as event_median_seconds times a step."""
    src = torch.randn(numel, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    seconds = event_median_seconds(lambda: dst.copy_(src), device, repeats,
                                   repeat_seconds=repeat_seconds)
    return 2 * src.numel() * src.element_size() / seconds


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
    return (f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def cpu_model():
    """The processor's name (Linux: /proc/cpuinfo), else its architecture: runs on different
    machines of the same size differ by 2-4x, and the table should say which one it was."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    # A virtual machine may show only the vendor's name: family and model tell the generation.
    return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


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


# Side-by-side step measurement with per-variant errors (bench_gpu.py)

def short(error):
    """One line for a table cell."""
    text = (str(error).strip().splitlines() or [""])[0].replace("|", "/")
    return f"error: {type(error).__name__}: {text[:160]}"


class Budget:
    """A time budget: allows() says whether `need` seconds are left, noting what it skips."""
    def __init__(self, seconds):
        self.end, self.skipped = time.monotonic() + seconds, []

    def left(self):
        return self.end - time.monotonic()

    def allows(self, need, what):
        left = self.left()
        if left < need:
            self.skipped.append(f"skipped {what}: {left:.0f} s of the budget left, it needs "
                                f"about {need} s")
            print(self.skipped[-1], flush=True)
        return left >= need


def free(device):
    """Waits for the device and returns cached CUDA blocks (between cases)."""
    synchronize(device)
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def measure_steps(variants, leaves, call, device, repeats, repeat_seconds=0.02, peak=True):
    """Times steps (clear the leaves' grads, loss = call(fn), loss.backward()) of each variant fn
    with event_median_seconds: name -> {"s": seconds per step, "loss": value, "peak": CUDA bytes
    above what was held before the step (None off CUDA)}, or an error string (out of memory, say:
    the other variants still run)."""
    def clear():
        for leaf in leaves:
            leaf.grad = None

    def step_of(fn):
        def step():
            clear()
            loss = call(fn)
            loss.backward()
            return loss.detach()
        return step

    out = {}
    for name, fn in variants.items():
        try:
            step = step_of(fn)
            loss = float(step())  # the first call (compilation) is a warm-up
            seconds = event_median_seconds(step, device, repeats, repeat_seconds=repeat_seconds)
            clear()
            cuda = str(device).startswith("cuda")
            cuda_peak = peak_cuda_bytes(step, device) if peak and cuda else None
            out[name] = {"s": seconds, "loss": loss, "peak": cuda_peak}
        except Exception as error:
            out[name] = short(error)
            print(name, out[name], flush=True)
        clear()
        free(device)
    return out


def field(res, name, fmt):
    """fmt(result) of a measure_steps() result; its error string, or n/a where it did not run."""
    r = res.get(name, "n/a")
    return fmt(r) if isinstance(r, dict) else r


def ms(res, name):
    return field(res, name, lambda r: f"{r['s'] * 1e3:.2f}")


def ratio(res, slow, fast):
    a, b = res.get(slow), res.get(fast)
    return f"{a['s'] / b['s']:.2f}x" if isinstance(a, dict) and isinstance(b, dict) else "n/a"


MiB = 2 ** 20


def peak_mib(r, minus=0):
    return "n/a" if r["peak"] is None else f"{max(r['peak'] - minus, 0) / MiB:.0f}"

"""Vocab-parallel cross entropy, forward+backward, 2 processes on the CPU (gloo): fusedloss on the
local shard, fusedloss on a DTensor, and torch's loss_parallel() + F.cross_entropy on a DTensor,
in one run. float32 logits (N, V) sharded on the classes, N x V / 2 per process.

    python benchmarks/bench_vocab_parallel.py [--shape 4096x32000]

Each process runs on one thread (2 processes on 2 cores). Reports the median step time (the
slower rank's) and each rank's peak resident memory above what it held before the step (the
logits shard and targets are inputs; the gradient of the shard is what every method must
produce). Writes benchmarks/results/vocab_parallel_cpu.md and .csv.
"""

import argparse
import datetime
import os
import socket
import statistics
import time
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from common import CPU_PEAK_ENV, machine_description, peak_rss_bytes, write_results

WORLD = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, port, n, v, repeats, results):
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    import fusedloss
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.tensor.parallel import loss_parallel

    mesh = init_device_mesh("cpu", (WORLD,))
    torch.manual_seed(0)
    target = torch.randint(v, (n,))
    target[::17] = -100
    local = (torch.randn(n, v // WORLD) * 2).requires_grad_()
    sharded = distribute_tensor(torch.randn(n, v) * 2, mesh, [Shard(1)]).detach().requires_grad_()

    def torch_loss_parallel():
        with loss_parallel():
            F.cross_entropy(sharded, target).backward()

    variants = {
        "fusedloss vocab_parallel_cross_entropy (local shard)": (
            local, lambda: fusedloss.functional.vocab_parallel_cross_entropy(local, target).backward()),
        "fusedloss cross_entropy (DTensor)": (
            sharded, lambda: fusedloss.functional.cross_entropy(sharded, target).backward()),
        "torch loss_parallel + F.cross_entropy (DTensor)": (sharded, torch_loss_parallel),
    }
    for name, (x, step) in variants.items():
        step()  # warm-up
        times = []
        for _ in range(repeats):
            x.grad = None
            dist.barrier()
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        x.grad = None
        fusedloss.cpu_cache_clear()  # the step allocates its gradient anew, as the first one does
        dist.barrier()
        peak = peak_rss_bytes(step)
        x.grad = None
        every = [None] * WORLD
        dist.all_gather_object(every, (statistics.median(times), peak))
        if rank == 0:
            results.put((name, every))
    dist.barrier()
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="4096x32000", help="N x V (V split over 2 processes)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, v = (int(s) for s in args.shape.split("x"))
    os.environ.update(CPU_PEAK_ENV)  # inherited by the spawned processes: exact peaks
    torch.set_num_threads(1)  # as each process (for the machine description)
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    port = free_port()
    processes = [context.Process(target=worker, args=(r, port, n, v,
                                                      args.repeats, results))
                 for r in range(WORLD)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=600)
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    gradient = n * (v // WORLD) * 4
    rows = []
    while not results.empty():
        name, every = results.get()
        seconds = max(t for t, _ in every)
        rows.append({"method": name, "ms per step": f"{seconds * 1e3:.1f}",
                     "peak bytes above inputs, rank 0 / rank 1": " / ".join(f"{p:,}" for _, p in every),
                     "of the shard's gradient": " / ".join(f"{p / gradient:.2f}x" for _, p in every)})
        print(rows[-1], flush=True)
    base = float(rows[-1]["ms per step"])
    for row in rows:
        row["time vs torch"] = f"{float(row['ms per step']) / base:.2f}x"
    header = (f"### Vocab-parallel cross entropy, forward+backward, float32, CPU, 2 processes (gloo), "
              f"N={n}, V={v} ({v // WORLD} per process)\n\n{machine_description('cpu').replace(', 1 threads', '')}, one "
              f"thread per process; median of {args.repeats} steps after a warm-up (the slower "
              f"rank); every 17th target ignored. Peak: resident memory above what the process "
              f"held before the step, with freed memory returned to the system and fusedloss's "
              f"gradient cache emptied first (else the step reuses the block the last one left "
              f"there and shows 0). The shard's "
              f"gradient takes {gradient:,} bytes.")
    write_results("vocab_parallel_cpu", rows, list(rows[0]), header)


if __name__ == "__main__":
    main()

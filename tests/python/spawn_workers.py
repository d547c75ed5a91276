"""Spawning the processes of a multi-process test (torch.distributed on 127.0.0.1): a free port,
and one run of `worker(rank, world_size, port, errors)` per rank, each bounded by a timeout.
Workers put a message on `errors` for each failure; the caller's assertion lists them."""

import queue
import socket
import time

import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(worker, world_size, timeout_seconds):
    """Runs worker on world_size spawned processes; fails if any is still running after
    timeout_seconds in all (it is then terminated), reported an error or exited with an error.
    The error queue is drained while waiting: a child blocks on a full queue until it is read."""
    context = mp.get_context("spawn")
    errors = context.Queue()
    port = free_port()
    processes = [context.Process(target=worker, args=(rank, world_size, port, errors))
                 for rank in range(world_size)]
    for p in processes:
        p.start()
    found = []
    deadline = time.monotonic() + timeout_seconds
    while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
        try:
            found.append(str(errors.get(timeout=0.5)))
        except queue.Empty:
            pass
    alive = [p for p in processes if p.is_alive()]
    for p in alive:
        p.terminate()
    for p in processes:
        p.join(timeout=10)
    while True:
        try:
            found.append(str(errors.get(timeout=0.5)))
        except queue.Empty:
            break
    assert not alive, f"{len(alive)} of {world_size} processes did not finish in time"
    assert not found, "\n".join(found)
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]

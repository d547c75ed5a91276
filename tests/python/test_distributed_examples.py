"""The torchrun examples run as documented (2 processes, CPU, gloo) and print what they claim:
synced metrics equal on every rank; fusedloss's vocab-parallel loss equal to torch's
loss_parallel at every printed step."""

import os
import re
import subprocess
import sys

from spawn_workers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_example(name):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               os.path.join(ROOT, "examples", "distributed", name)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_distributed_ddp_example_syncs_metrics():
    out = run_example("ddp_training.py")
    # The two processes print to one pipe: their lines may run together.
    scores = re.findall(r"rank (\d): \d+ held-out samples here; over all 3000: "
                        r"(macro F1 [\d.]+, accuracy [\d.]+)", out)
    assert sorted(r for r, _ in scores) == ["0", "1"], out
    assert scores[0][1] == scores[1][1], out  # every rank reports the whole set's scores
    assert float(re.search(r"accuracy ([\d.]+)", scores[0][1]).group(1)) > 0.8, out


def test_distributed_tensor_parallel_example_matches_loss_parallel():
    out = run_example("tensor_parallel_lm_head.py")
    steps = re.findall(r"fusedloss ([\d.]+)\s+torch loss_parallel ([\d.]+)", out)
    assert len(steps) == 6, out
    for ours, theirs in steps:
        assert abs(float(ours) - float(theirs)) <= 2e-6, out

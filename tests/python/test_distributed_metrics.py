"""Metric state synced across processes (torch.distributed, gloo on 127.0.0.1): every rank updates
with its own uneven share of the data, sync() combines the states, and the result equals one
process's on all the data (integer counts exactly, float64 moments and sums to 1e-12). One spawn
per world size, every check inside it; a 60 s process-group timeout bounds any hang."""

import datetime
import os
import traceback

import pytest
import torch
import torch.distributed as dist

import fusedloss
from spawn_workers import run_workers

M = fusedloss.metrics
TIMEOUT_SECONDS = 60


def data():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(500, generator=g, dtype=torch.float64)
    labels = (torch.rand(500, generator=g, dtype=torch.float64) < scores).long()
    logits = torch.randn(500, 4, generator=g, dtype=torch.float64)
    classes = torch.randint(4, (500,), generator=g)
    regression = torch.randn(500, 2, generator=g, dtype=torch.float64)
    return scores, labels, logits, classes, regression, regression + 0.3 * torch.randn(500, 2, generator=g,
                                                                                        dtype=torch.float64)


def metrics():
    """name -> (metric factory, which inputs it reads)."""
    return {
        "f1_macro": (lambda: M.F1Score("multiclass", num_classes=4, average="macro"), "multiclass"),
        "confusion": (lambda: M.ConfusionMatrix("multiclass", num_classes=4), "multiclass"),
        "accuracy_samplewise": (lambda: M.Accuracy("binary", multidim_average="samplewise"), "binary"),
        "auroc_binned": (lambda: M.AUROC("multiclass", num_classes=4, thresholds=50), "multiclass"),
        "ap_exact": (lambda: M.AveragePrecision("binary"), "binary"),
        "calibration": (lambda: M.CalibrationError("binary"), "binary"),
        "r2": (lambda: M.R2Score(), "regression"),
        "mse": (lambda: M.MeanSquaredError(), "regression"),
    }


def inputs(kind):
    scores, labels, logits, classes, preds, target = data()
    return {"binary": (scores, labels), "multiclass": (logits, classes), "regression": (preds, target)}[kind]


def equal(a, b):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if not a.is_floating_point():
        return torch.equal(a, b)
    return torch.allclose(a.double(), b.double(), rtol=1e-12, atol=1e-12, equal_nan=True)


def worker(rank, world_size, port, errors):
    try:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
        # Uneven shares, the last rank's empty for world size 4; two batches per rank.
        cuts = torch.linspace(0, 500, world_size + 1).long().tolist()
        if world_size == 4:
            cuts = [0, 60, 300, 500, 500]
        mine = slice(cuts[rank], cuts[rank + 1])
        for name, (make, kind) in metrics().items():
            preds, target = inputs(kind)
            one_process = make()
            one_process.update(preds, target)
            expected = one_process.compute()
            synced = make()
            p, t = preds[mine], target[mine]
            half = p.shape[0] // 2
            for batch in (slice(0, half), slice(half, None)):
                if p[batch].shape[0]:
                    synced.update(p[batch], t[batch])
            got = synced.sync().compute()
            if not equal(got, expected):
                errors.put(f"world {world_size} rank {rank} {name}: {got} != {expected}")
        collection = M.MetricCollection({"auroc": M.AUROC("binary", thresholds=20), "f1": M.F1Score("binary")})
        scores, labels = inputs("binary")
        collection.update(scores[mine], labels[mine])
        result = collection.sync().compute()
        if not equal(result["auroc"], M.auroc(scores, labels, "binary", thresholds=20)):
            errors.put(f"world {world_size} rank {rank} collection auroc")
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - reported to the parent
        errors.put(f"world {world_size} rank {rank}: {traceback.format_exc()}")


@pytest.mark.parametrize("world_size", [2, 4])
def test_distributed_metric_sync_equals_one_process(world_size):
    run_workers(worker, world_size, TIMEOUT_SECONDS + 60)


def test_sync_outside_torch_distributed_is_a_no_op():
    metric = M.Accuracy("binary")
    metric.update(torch.tensor([0.2, 0.9]), torch.tensor([0, 1]))
    before = metric.confusion.clone()
    assert not dist.is_initialized()
    assert torch.equal(metric.sync().confusion, before)

"""Data-parallel training with a fused loss and metrics synced across processes.

    torchrun --nproc-per-node 2 examples/distributed/ddp_training.py        # CPU, gloo
    torchrun --nproc-per-node 8 examples/distributed/ddp_training.py        # GPUs: nccl

Every process trains the same small classifier (DistributedDataParallel) on its own share of a
synthetic 4-class problem, with fusedloss.nn.CrossEntropyLoss, and updates its own F1 and
accuracy metrics on its share of the held-out data. metric.sync() then combines the metrics'
state across the processes (one all-reduce of the counts: no predictions are gathered), so every
process reports the score of the whole held-out set. The shares are uneven on purpose.
"""

import datetime
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fusedloss

CLASSES = 4


def make_data(n, seed):
    """Samples around 4 fixed centers (the same for training and held-out data)."""
    centers = torch.randn(CLASSES, 8, generator=torch.Generator().manual_seed(0)) * 1.5
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(CLASSES, (n,), generator=g)
    return centers[labels] + torch.randn(n, 8, generator=g), labels


def main():
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    torch.manual_seed(0)  # the same initial model on every process
    model = DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, CLASSES)).to(device))
    criterion = fusedloss.nn.CrossEntropyLoss(label_smoothing=0.05)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    x, y = make_data(4096, seed=1)
    share = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    x, y = x[share].to(device), y[share].to(device)
    for epoch in range(5):
        for start in range(0, len(x), 64):
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x[start:start + 64]), y[start:start + 64])
            loss.backward()  # DDP all-reduces the gradients
            optimizer.step()
        if rank == 0:
            print(f"epoch {epoch}: last batch loss {loss.item():.4f}")

    # Held-out metrics: each process its own, uneven share; sync() combines the states.
    xt, yt = make_data(3000, seed=2)
    cuts = [0, 500] + [500 + (r + 1) * 2500 // (world - 1) for r in range(world - 1)] if world > 1 else [0, 3000]
    mine = slice(cuts[rank], cuts[rank + 1])
    f1 = fusedloss.metrics.F1Score("multiclass", num_classes=CLASSES, average="macro")
    accuracy = fusedloss.metrics.Accuracy("multiclass", num_classes=CLASSES)
    with torch.no_grad():
        logits = model(xt[mine].to(device))
    for metric in (f1, accuracy):
        metric.update(logits, yt[mine].to(device))
        metric.sync()
    print(f"rank {rank}: {mine.stop - mine.start} held-out samples here; over all "
          f"{len(xt)}: macro F1 {f1.compute().item():.4f}, accuracy {accuracy.compute().item():.4f}")
    dist.barrier()  # no process tears the group down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

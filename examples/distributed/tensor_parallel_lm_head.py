"""A language-model head sharded along the vocabulary (tensor parallel), its loss vocab-parallel.

    torchrun --nproc-per-node 2 examples/distributed/tensor_parallel_lm_head.py   # CPU, gloo
    torchrun --nproc-per-node 4 examples/distributed/tensor_parallel_lm_head.py   # GPUs: nccl

A tiny next-token model whose output projection (H -> V) is split by rows over the processes with
torch's ColwiseParallel: each process computes the logits of its V / world classes only, as a
DTensor sharded on the class dimension. fusedloss.functional.cross_entropy takes that DTensor
as it is and runs vocab-parallel (two small all-gathers of per-row statistics; no process ever
holds the full logits). The same model is trained side by side with torch's own
loss_parallel() + F.cross_entropy, from the same initial weights: the losses agree step by step.
"""

import copy
import datetime
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard
from torch.distributed.tensor.parallel import ColwiseParallel, loss_parallel, parallelize_module

import fusedloss

VOCAB, HIDDEN, BATCH, LENGTH = 1000, 64, 8, 32


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.mix = torch.nn.Sequential(torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.GELU())
        self.lm_head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, tokens):
        return self.lm_head(self.mix(self.embed(tokens)))


def batch(step, device):
    """Sequences that count up by a step of 1-3 (mod V): the next token is learnable."""
    g = torch.Generator().manual_seed(step)
    start = torch.randint(VOCAB, (BATCH, 1), generator=g)
    stride = torch.randint(1, 4, (BATCH, 1), generator=g)
    tokens = (start + stride * torch.arange(LENGTH + 1)) % VOCAB
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)


def main():
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    mesh = init_device_mesh(device.type, (world,))
    torch.manual_seed(0)
    ours = TinyLM().to(device)
    theirs = copy.deepcopy(ours)
    plan = {"lm_head": ColwiseParallel(output_layouts=Shard(-1), use_local_output=False)}
    for model in (ours, theirs):
        parallelize_module(model, mesh, plan)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=3e-3)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=3e-3)

    for step in range(30):
        inputs, targets = batch(step, device)
        targets = targets.flatten()
        # fusedloss: the DTensor logits (B T, V) sharded on the classes go in as they are.
        logits = ours(inputs).flatten(0, 1)
        loss = fusedloss.functional.cross_entropy(logits, targets)
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        # torch: the same through loss_parallel().
        with loss_parallel():
            reference = F.cross_entropy(theirs(inputs).flatten(0, 1), targets)
            reference.backward()
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)
        reference = reference.full_tensor() if hasattr(reference, "full_tensor") else reference
        if rank == 0 and step % 5 == 0:
            print(f"step {step:2d}: fusedloss {loss.item():.6f}   torch loss_parallel "
                  f"{reference.item():.6f}")
    shard = ours.lm_head.weight.to_local().shape
    print(f"rank {rank}: lm_head shard {tuple(shard)} of ({VOCAB}, {HIDDEN})")
    dist.barrier()  # no process tears the group down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

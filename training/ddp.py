"""Data-parallel training (DistributedDataParallel): the same command under ``torchrun --nproc_per_node N``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; without it we run as a
single process. Backend: NCCL on GPUs, gloo on CPUs. Every rank trains on its own shard of the sequences;
gradients are averaged by DDP; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup() -> Distributed:
    """Join the process group torchrun describes (or run alone) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return Distributed(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Distributed(rank=rank, world=world, device=device)


def barrier(d: Distributed) -> None:
    if d.active:
        dist.barrier()


def mean(value: torch.Tensor, d: Distributed) -> torch.Tensor:
    """The mean of ``value`` over ranks (a copy)."""
    value = value.detach().clone().to(d.device)  # NCCL reduces device tensors only
    if d.active:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= d.world
    return value


def gather(value: torch.Tensor, d: Distributed) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor (e.g. RNG states), in rank order."""
    if not d.active:
        return [value]
    value = value.to(d.device).contiguous()  # NCCL gathers device tensors only
    copies = [torch.empty_like(value) for _ in range(d.world)]
    dist.all_gather(copies, value)
    return [copy.cpu() for copy in copies]


def shutdown(d: Distributed) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()

"""Running under `torchrun` / `accelerate launch`: rank, world size, device, and a barrier."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Ranks:
    """The launcher's ranks (RANK / WORLD_SIZE / LOCAL_RANK), starting the process group when several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()


def device_for(ranks: Ranks, device: str) -> str:
    """With several ranks on CUDA, each takes its local GPU; otherwise the requested device."""
    if ranks.world > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{ranks.local_rank}"
    return device


def shutdown(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_true(ranks: Ranks, flag: bool) -> bool:
    """Whether `flag` holds on every rank (a collective: every rank must call it, like a barrier)."""
    if ranks.world <= 1:
        return flag
    import torch
    import torch.distributed as dist

    device = f"cuda:{ranks.local_rank}" if dist.get_backend() == "nccl" else "cpu"
    votes = torch.tensor([int(flag)], device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MIN)
    return bool(votes.item())

"""DistributedDataParallel through torchrun: nothing home-made.

``torchrun --nproc_per_node N -m engine.cli train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK;
the trainer then joins the process group (NCCL on CUDA, gloo on CPU), shards batches
with DistributedSampler, wraps the model in DDP, and gathers validation scores so every
rank computes the same metrics. Only rank 0 writes files and reports progress.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    return ctx


def gather(obj: object, ctx: DistContext) -> list:
    """Every rank's ``obj``, on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_state(model: torch.nn.Module, ctx: DistContext) -> None:
    """Rank 0's parameters and buffers on every rank (after a data-driven initialisation)."""
    if not ctx.enabled:
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

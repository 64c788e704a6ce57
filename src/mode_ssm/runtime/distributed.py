"""Data parallelism under torchrun: gloo on CPU, NCCL on GPU; plain single process otherwise."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=dt.timedelta(minutes=30)
        )
    return DistContext(rank, world_size, local_rank, dev)


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def gather_objects(ctx: DistContext, items: list[Any]) -> list[Any]:
    """Concatenate every rank's list (on every rank), e.g. per-trial validation results."""
    if not ctx.enabled:
        return items
    out: list[list[Any]] = [None] * ctx.world_size  # type: ignore[list-item]
    torch_dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    if not ctx.enabled:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        torch_dist.barrier()

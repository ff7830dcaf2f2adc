"""Collective helpers that are no-ops without a process group (`--launcher none`)."""
from typing import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_mean_(tensors: Iterable[torch.Tensor]) -> None:
    """Average each tensor over ranks, in place."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for tensor in tensors:
        dist.all_reduce(tensor)
        tensor.div_(world)


def barrier() -> None:
    if is_distributed():
        dist.barrier()

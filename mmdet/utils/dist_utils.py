"""Process-group helpers that also work in a plain single process (no process group)."""

import os
import subprocess
import warnings
from collections.abc import Iterable
from typing import Optional

import torch
import torch.distributed as dist

from mmdet.utils.errors import ConfigKeyError, ConfigValueError

DEFAULT_MASTER_PORT = "29500"


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ConfigKeyError(f"environment variable {name} is not set (needed by the distributed launcher)")
    try:
        return int(value)
    except ValueError as err:
        raise ConfigValueError(f"environment variable {name}={value!r} is not an integer") from err


def resolve_backend(backend: Optional[str]) -> str:
    """None -> nccl with CUDA, else gloo. nccl asked for without CUDA (e.g. a config's dist_params on a CPU
    machine) falls back to gloo with a warning instead of failing inside torch."""
    if backend is None:
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        warnings.warn("backend 'nccl' needs CUDA, which is not available: using 'gloo'", stacklevel=2)
        return "gloo"
    return backend


def _select_cuda_device(local_rank: int) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())


def slurm_master_addr(node_list: str) -> str:
    """First host of a SLURM node list, expanded by `scontrol show hostnames`."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", node_list], capture_output=True, text=True, check=True)
    except FileNotFoundError as err:
        raise RuntimeError("the slurm launcher needs the `scontrol` command, which is not on PATH") from err
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"`scontrol show hostnames {node_list}` failed: {err.stderr.strip()}") from err
    hosts = out.stdout.split()
    if not hosts:
        raise RuntimeError(f"`scontrol show hostnames {node_list}` printed no host")
    return hosts[0]


def _init_pytorch(backend: str) -> None:
    rank = _env_int("RANK")
    world_size = _env_int("WORLD_SIZE")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ConfigKeyError(f"environment variable {name} is not set (torchrun sets it)")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    _select_cuda_device(local_rank)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)


def _init_slurm(backend: str) -> None:
    proc_id = _env_int("SLURM_PROCID")
    ntasks = _env_int("SLURM_NTASKS")
    node_list = os.environ.get("SLURM_NODELIST")
    if not node_list:
        raise ConfigKeyError("environment variable SLURM_NODELIST is not set (run under srun)")
    num_gpus = torch.cuda.device_count()
    local_rank = int(os.environ.get("SLURM_LOCALID", proc_id % num_gpus if num_gpus else 0))
    os.environ.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)
    os.environ["MASTER_ADDR"] = slurm_master_addr(node_list)
    os.environ["WORLD_SIZE"] = str(ntasks)
    os.environ["RANK"] = str(proc_id)
    os.environ["LOCAL_RANK"] = str(local_rank)
    _select_cuda_device(local_rank)
    dist.init_process_group(backend, init_method="env://", rank=proc_id, world_size=ntasks)


def init_dist(launcher: str, backend: Optional[str] = None) -> None:
    """Start the default process group from torchrun ('pytorch') or srun ('slurm') environment variables.

    backend defaults to nccl when CUDA is available, else gloo; with CUDA the current device becomes the
    local rank's GPU."""
    backend = resolve_backend(backend)
    if launcher == "pytorch":
        _init_pytorch(backend)
    elif launcher == "slurm":
        _init_slurm(backend)
    else:
        raise ConfigValueError(f"launcher must be 'pytorch' or 'slurm', got '{launcher}' ('none' needs no init_dist)")


def get_dist_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when no process group is running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return get_dist_info()[0] == 0


def barrier() -> None:
    """Synchronise all ranks; nothing to do without a process group."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean_(tensors: Iterable[torch.Tensor]) -> None:
    """Average each tensor over ranks, in place; nothing to do with a single process.

    Args:
        tensors: tensors of any shape, on the device the process group's backend reduces on.
    """
    _, world_size = get_dist_info()
    if world_size == 1:
        return
    for tensor in tensors:
        dist.all_reduce(tensor)
        tensor.div_(world_size)

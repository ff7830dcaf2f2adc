"""Dataset/pipeline registries and the data-loader factory (mmdetection 2.x signatures, no DataContainer)."""

import random
from functools import partial
from typing import Optional

import numpy as np
import torch
from mmengine.registry import Registry
from torch.utils.data import DataLoader, Dataset

from mmdet.utils.dist_utils import get_dist_info
from mmdet.utils.errors import ConfigKeyError

from .collate import collate
from .samplers import DistributedGroupSampler, DistributedTestSampler, GroupSampler

# The explicit scope keeps mmengine from trying to import the original mmdet package for "mmdet" scoped names.
DATASETS = Registry("datasets", scope="qdrop_det")
PIPELINES = Registry("pipelines", scope="qdrop_det")


def build_dataset(cfg: dict, default_args: Optional[dict] = None) -> Dataset:
    """Build a dataset from a config dict such as `cfg.data.test` (its `type` names a registered dataset)."""
    if "type" not in cfg:
        raise ConfigKeyError(f"dataset config needs a 'type' key, got keys {sorted(cfg)}")
    return DATASETS.build(dict(cfg), default_args=default_args)


def _seed_worker(worker_id: int, num_workers: int, rank: int, seed: Optional[int]) -> None:
    """Distinct, reproducible RNG streams per worker. Without a seed numpy still gets a per-worker seed
    (from torch's, which DataLoader varies per worker); otherwise every forked worker would draw the same flips."""
    if seed is None:
        np.random.seed(torch.initial_seed() % 2**32)
        return
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


def build_dataloader(
    dataset: Dataset,
    samples_per_gpu: int,
    workers_per_gpu: int,
    dist: bool = False,
    shuffle: bool = True,
    seed: Optional[int] = None,
    num_gpus: int = 1,
    **kwargs,
) -> DataLoader:
    """Data loader as in mmdetection 2.x.

    Training (`shuffle=True`) draws every batch from one aspect-ratio group (the dataset's `flag`).
    Testing with `dist=True` hands image k to rank k mod world_size (see `DistributedTestSampler`).
    In one process the batch is `num_gpus * samples_per_gpu`; distributed, each rank loads `samples_per_gpu`.
    `workers_per_gpu=0` loads in the calling process. Extra keyword arguments go to `torch.utils.data.DataLoader`.
    """
    rank, world_size = get_dist_info()
    if dist:
        batch_size, num_workers = samples_per_gpu, workers_per_gpu
        if shuffle:
            sampler = DistributedGroupSampler(dataset, samples_per_gpu, world_size, rank, seed=seed)
        else:
            sampler = DistributedTestSampler(dataset, world_size, rank)
    else:
        batch_size, num_workers = num_gpus * samples_per_gpu, num_gpus * workers_per_gpu
        sampler = GroupSampler(dataset, batch_size, seed=seed) if shuffle else None

    init_fn = partial(_seed_worker, num_workers=num_workers, rank=rank, seed=seed) if num_workers > 0 else None
    kwargs.setdefault("pin_memory", False)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=init_fn,
        shuffle=False,
        **kwargs,
    )

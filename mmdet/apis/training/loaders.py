"""The train and validation loaders of a training config."""

import copy

from torch.utils.data import DataLoader, Dataset

from mmdet.datasets import build_dataloader, build_dataset
from mmdet.utils.errors import ConfigValueError


def build_train_loader(dataset: Dataset, cfg, distributed: bool, world_size: int) -> DataLoader:
    """Shuffled, aspect-ratio grouped batches of `cfg.data.samples_per_gpu` images per process.

    Args:
        dataset: the training dataset.
        cfg: the training config (`data.samples_per_gpu`, `data.workers_per_gpu`, optional `seed`).
        distributed: one shard of the dataset per process.
        world_size: the number of processes, named in the error when the loader is empty.

    Returns:
        The loader; a `ValueError` when it has no batch.
    """
    loader = build_dataloader(
        dataset,
        samples_per_gpu=cfg.data.samples_per_gpu,
        workers_per_gpu=cfg.data.workers_per_gpu,
        dist=distributed,
        shuffle=True,
        seed=cfg.get("seed"),
        num_gpus=1,
    )
    if len(loader) == 0:
        raise ConfigValueError(
            f"the training loader is empty: {len(dataset)} images, "
            f"samples_per_gpu={cfg.data.samples_per_gpu}, {world_size} process(es)"
        )
    return loader


def build_val_loader(cfg, distributed: bool) -> DataLoader:
    """The `cfg.data.val` set in test mode, in order; `data.val_dataloader` may override the batch size and workers.

    Args:
        cfg: the training config.
        distributed: one shard of the dataset per process.

    Returns:
        The loader, one image per batch unless `data.val_dataloader.samples_per_gpu` says otherwise.
    """
    val_cfg = copy.deepcopy(dict(cfg.data.val))
    val_cfg["test_mode"] = True
    val_dataset = build_dataset(val_cfg)
    loader_options = dict(cfg.data.get("val_dataloader") or {})
    return build_dataloader(
        val_dataset,
        samples_per_gpu=loader_options.get("samples_per_gpu", 1),
        workers_per_gpu=loader_options.get("workers_per_gpu", cfg.data.workers_per_gpu),
        dist=distributed,
        shuffle=False,
    )

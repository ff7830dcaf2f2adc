"""The training loop of mmdetection 2.x's `train_detector`, written as a plain epoch loop.

The config keys it reads have the same meaning as in mmdetection 2.28:
- `data.samples_per_gpu`, `data.workers_per_gpu`: the train loader; validation uses one image per batch.
- `optimizer`: a torch.optim class by name plus its keyword arguments (SGD, momentum, weight_decay, ...).
- `lr_config`: step decay with warm-up, see lr_schedule.py; set before every iteration.
- `runner`, `optimizer_config`, `checkpoint_config`, `log_config`, `evaluation`: see training/settings.py.
- `load_from`: weights to start from (strict=False, mismatches are reported).
"""

import random
import time
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from mmdet.apis.lr_schedule import StepLrSchedule
from mmdet.apis.training.checkpoints import save_epoch_checkpoint
from mmdet.apis.training.epoch import TrainClock, train_epoch
from mmdet.apis.training.evaluation import evaluate
from mmdet.apis.training.loaders import build_train_loader, build_val_loader
from mmdet.apis.training.log import TrainLog, format_values
from mmdet.apis.training.optimizer import build_optimizer
from mmdet.apis.training.settings import TrainSettings
from mmdet.utils import default_device, get_dist_info, get_root_logger, load_checkpoint


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python's, numpy's and torch's generators (all devices).

    Args:
        seed: the value every generator starts from.
        deterministic: also pin cuDNN to deterministic algorithms (and turn off its benchmark mode).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _single_dataset(dataset) -> Dataset:
    if isinstance(dataset, (list, tuple)):
        if len(dataset) != 1:
            raise ValueError(f"train_detector trains on one dataset, got a list of {len(dataset)}")
        return dataset[0]
    return dataset


def train_detector(
    model: nn.Module,
    dataset,
    cfg,
    distributed: bool = False,
    validate: bool = False,
    timestamp: Optional[str] = None,
    meta: Optional[dict] = None,
) -> None:
    """Train `model` on `dataset` as `cfg` says; logs and checkpoints go to `cfg.work_dir`.

    Args:
        model: the detector, on any device (it is moved to `cfg.device`, else the current GPU, else the CPU).
        dataset: the training dataset, or a one-element list of it.
        cfg: the training config (see the module docstring).
        distributed: one process per device, joined by an initialised process group.
        validate: evaluate on `cfg.data.val` every `evaluation.interval` epochs and after the last.
        timestamp: names the json log `<timestamp>.log.json` (default: now).
        meta: stored in every checkpoint's `meta` (`CLASSES` defaults to the dataset's).
    """
    dataset = _single_dataset(dataset)
    settings = TrainSettings.from_config(cfg)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    timestamp = timestamp or time.strftime("%Y%m%d_%H%M%S", time.localtime())
    logger = get_root_logger(log_level=cfg.get("log_level", "INFO"))
    rank, world_size = get_dist_info()
    log = TrainLog(settings.work_dir, timestamp, logger, rank)
    loader = build_train_loader(dataset, cfg, distributed, world_size)

    device = torch.device(cfg.device) if cfg.get("device") else default_device()
    if cfg.get("load_from"):
        load_checkpoint(model, cfg.load_from, map_location="cpu", strict=False, logger=logger)
    model = model.to(device)
    model.train()
    if distributed:
        model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.get("find_unused_parameters", False),
        )
    optimizer = build_optimizer(model, cfg.optimizer)
    schedule = StepLrSchedule.from_config(cfg.get("lr_config") or {}, base_lr=cfg.optimizer["lr"])
    val_loader = build_val_loader(cfg, distributed) if validate else None
    checkpoint_meta = dict(meta or {})
    checkpoint_meta.setdefault("CLASSES", getattr(dataset, "CLASSES", None))

    logger.info(
        f"training on {device} ({world_size} process(es)), {settings.max_epochs} epochs of {len(loader)} "
        f"iterations, work dir {settings.work_dir}"
    )
    iteration = 0
    clock = TrainClock(total_iters=settings.max_epochs * len(loader))
    for epoch in range(1, settings.max_epochs + 1):
        iteration = train_epoch(
            model,
            loader,
            optimizer,
            schedule,
            device,
            epoch - 1,
            iteration,
            settings,
            log,
            clock,
            show_progress=rank == 0,
        )
        if rank == 0 and settings.checkpoint_due(epoch):
            save_epoch_checkpoint(model, settings.work_dir, epoch, iteration, checkpoint_meta, settings.max_keep_ckpts)
        if val_loader is not None and settings.evaluation_due(epoch):
            metrics = evaluate(model, val_loader, distributed, settings.eval_kwargs, logger)
            if metrics is not None:
                log.write(
                    dict(mode="val", epoch=epoch, iter=iteration, **metrics),
                    f"Epoch(val) [{epoch}]\t{format_values(metrics)}",
                )
    logger.info(f"training done in {clock.elapsed()}")

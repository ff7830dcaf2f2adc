"""The training loop of mmdetection 2.x's `train_detector`, written as a plain epoch loop.

What the config keys do here (same meaning as in mmdetection 2.28):
- `data.samples_per_gpu`, `data.workers_per_gpu`: the train loader; validation uses one image per batch.
- `optimizer`: a torch.optim class by name plus its keyword arguments (SGD, momentum, weight_decay, ...).
- `optimizer_config.grad_clip`: None or the keyword arguments of `clip_grad_norm_` (max_norm, norm_type).
- `lr_config`: step decay with warm-up, see lr_schedule.py; set before every iteration.
- `runner`: `EpochBasedRunner` with `max_epochs`.
- `checkpoint_config.interval` (epochs), optional `max_keep_ckpts`; `latest.pth` always holds the last saved epoch.
- `log_config.interval` (iterations): a text line in `<timestamp>.log` and a json line in `<timestamp>.log.json`.
- `evaluation.interval` (epochs); the other keys of `evaluation` go to `dataset.evaluate` (e.g. `metric='bbox'`).
- `load_from`: weights to start from (strict=False, mismatches are reported).
The total loss is the sum of every entry whose key contains 'loss' (lists are summed); the others are logged only.
"""
import copy
import datetime
import json
import logging
import random
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mmdet.apis.lr_schedule import StepLrSchedule, current_lr, set_lr
from mmdet.models.detectors.base import parse_losses

CHECKPOINT_PATTERN = "epoch_{}.pth"
_EVALUATION_LOOP_KEYS = ("interval", "save_best", "by_epoch", "start")


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); `deterministic` also pins cuDNN's algorithms."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def build_optimizer(model: nn.Module, optimizer_cfg: dict) -> torch.optim.Optimizer:
    """`optimizer_cfg` = dict(type=<torch.optim class name>, lr=..., **kwargs); every trainable parameter, one group."""
    options = dict(optimizer_cfg)
    if "paramwise_cfg" in options:
        raise ValueError("optimizer.paramwise_cfg is not supported: every parameter shares one group")
    name = options.pop("type", None)
    optimizer_cls = getattr(torch.optim, str(name), None)
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise ValueError(f"optimizer.type must name a torch.optim optimizer (e.g. 'SGD'), got {name!r}")
    if "lr" not in options:
        raise ValueError("optimizer.lr is required")
    params = [p for p in model.parameters() if p.requires_grad]
    return optimizer_cls(params, **options)


def train_step(model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer,
               grad_clip: Optional[dict] = None) -> Dict[str, float]:
    """One SGD step on `batch` (already on the model's device); returns the logged values."""
    loss, log_vars = parse_losses(model(return_loss=True, **batch))
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss: {log_vars}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
        if params:
            log_vars["grad_norm"] = float(nn.utils.clip_grad_norm_(params, **grad_clip))
    optimizer.step()
    return log_vars


def _grad_clip_options(cfg) -> Optional[dict]:
    optimizer_config = dict(cfg.get("optimizer_config") or {})
    hook_type = optimizer_config.pop("type", "OptimizerHook")
    grad_clip = optimizer_config.pop("grad_clip", None)
    if hook_type != "OptimizerHook" or optimizer_config:
        raise ValueError(f"optimizer_config supports only grad_clip (OptimizerHook); got type={hook_type!r} "
                         f"and keys {sorted(optimizer_config)}")
    return None if grad_clip is None else dict(grad_clip)


def _max_epochs(cfg) -> int:
    runner = dict(cfg.get("runner") or {})
    if runner.get("type", "EpochBasedRunner") != "EpochBasedRunner":
        raise ValueError(f"runner.type {runner.get('type')!r} is not supported; use EpochBasedRunner with max_epochs")
    max_epochs = runner.get("max_epochs", cfg.get("total_epochs"))
    if not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"runner.max_epochs must be a positive integer, got {max_epochs!r}")
    return max_epochs


def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _set_sampler_epoch(loader, epoch: int) -> None:
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


class _TrainLog:
    """Text lines through the logger, json lines into `<timestamp>.log.json` (rank 0 only)."""

    def __init__(self, work_dir: Path, timestamp: str, logger: logging.Logger, rank: int):
        self.logger = logger
        self.json_path = work_dir / f"{timestamp}.log.json" if rank == 0 else None

    def write(self, record: dict, text: str) -> None:
        self.logger.info(text)
        if self.json_path is not None:
            with self.json_path.open("a") as stream:
                stream.write(json.dumps(record, sort_keys=True) + "\n")


def _format_values(values: Dict[str, float]) -> str:
    return ", ".join(f"{name}: {value:.4f}" for name, value in values.items())


def _save(model: nn.Module, work_dir: Path, epoch: int, iteration: int, meta: dict, max_keep: int) -> None:
    from mmdet.utils import save_checkpoint

    meta = dict(meta, epoch=epoch, iter=iteration, time=time.asctime())
    save_checkpoint(_unwrap(model), str(work_dir / CHECKPOINT_PATTERN.format(epoch)), meta=meta)
    save_checkpoint(_unwrap(model), str(work_dir / "latest.pth"), meta=meta)
    if max_keep > 0:
        saved = sorted(work_dir.glob(CHECKPOINT_PATTERN.format("*")), key=lambda p: int(p.stem.split("_")[1]))
        for old in saved[:-max_keep]:
            old.unlink()


def _build_val_loader(cfg, distributed: bool):
    from mmdet.datasets import build_dataloader, build_dataset

    val_cfg = copy.deepcopy(dict(cfg.data.val))
    val_cfg["test_mode"] = True
    val_dataset = build_dataset(val_cfg)
    loader_options = dict(cfg.data.get("val_dataloader") or {})
    return build_dataloader(val_dataset,
                            samples_per_gpu=loader_options.get("samples_per_gpu", 1),
                            workers_per_gpu=loader_options.get("workers_per_gpu", cfg.data.workers_per_gpu),
                            dist=distributed, shuffle=False)


def _evaluate(model: nn.Module, loader, distributed: bool, eval_kwargs: dict,
              logger: logging.Logger) -> Optional[Dict[str, float]]:
    from mmdet.apis import multi_gpu_test, single_gpu_test

    model.eval()
    if distributed:
        results = multi_gpu_test(model, loader)
    else:
        results = single_gpu_test(model, loader, show_progress=False)
    model.train()
    if results is None:  # not rank 0
        return None
    metrics = loader.dataset.evaluate(results, logger=logger, **eval_kwargs)
    return {name: float(value) for name, value in metrics.items() if isinstance(value, (int, float))}


def train_detector(model: nn.Module, dataset, cfg, distributed: bool = False, validate: bool = False,
                   timestamp: Optional[str] = None, meta: Optional[dict] = None) -> None:
    """Train `model` on `dataset` (or a one-element list of it) as `cfg` says; writes logs and checkpoints to cfg.work_dir."""
    from mmdet.datasets import build_dataloader
    from mmdet.utils import get_dist_info, get_root_logger, load_checkpoint, to_device

    if isinstance(dataset, (list, tuple)):
        if len(dataset) != 1:
            raise ValueError(f"train_detector trains on one dataset, got a list of {len(dataset)}")
        dataset = dataset[0]
    if cfg.get("resume_from"):
        raise ValueError(f"resume_from={cfg.resume_from!r}: resuming is not supported (checkpoints hold no optimizer "
                         "state); use load_from to start from its weights")
    if not cfg.get("work_dir"):
        raise ValueError("cfg.work_dir must be set (tools/train.py sets it from --work-dir or the config name)")
    max_epochs = _max_epochs(cfg)
    grad_clip = _grad_clip_options(cfg)
    work_dir = Path(cfg.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    timestamp = timestamp or time.strftime("%Y%m%d_%H%M%S", time.localtime())
    logger = get_root_logger(log_level=cfg.get("log_level", "INFO"))
    rank, world_size = get_dist_info()
    log = _TrainLog(work_dir, timestamp, logger, rank)

    loader = build_dataloader(dataset, samples_per_gpu=cfg.data.samples_per_gpu,
                              workers_per_gpu=cfg.data.workers_per_gpu, dist=distributed, shuffle=True,
                              seed=cfg.get("seed"), num_gpus=1)
    if len(loader) == 0:
        raise ValueError(f"the training loader is empty: {len(dataset)} images, "
                         f"samples_per_gpu={cfg.data.samples_per_gpu}, {world_size} process(es)")

    device = torch.device(cfg.device) if cfg.get("device") else _default_device()
    if cfg.get("load_from"):
        load_checkpoint(model, cfg.load_from, map_location="cpu", strict=False, logger=logger)
    model = model.to(device)
    model.train()
    if distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=cfg.get("find_unused_parameters", False))
    optimizer = build_optimizer(model, cfg.optimizer)
    schedule = StepLrSchedule.from_config(cfg.get("lr_config") or {}, base_lr=cfg.optimizer["lr"])

    checkpoint_cfg = dict(cfg.get("checkpoint_config") or {})
    checkpoint_interval = checkpoint_cfg.get("interval", 1)
    log_interval = dict(cfg.get("log_config") or {}).get("interval", 50)
    eval_cfg = dict(cfg.get("evaluation") or {})
    eval_interval = eval_cfg.get("interval", 1)
    eval_kwargs = {k: v for k, v in eval_cfg.items() if k not in _EVALUATION_LOOP_KEYS}
    val_loader = _build_val_loader(cfg, distributed) if validate else None
    checkpoint_meta = dict(meta or {})
    checkpoint_meta.setdefault("CLASSES", getattr(dataset, "CLASSES", None))

    logger.info(f"training on {device} ({world_size} process(es)), {max_epochs} epochs of {len(loader)} iterations, "
                f"work dir {work_dir}")
    iteration = 0
    total_iters = max_epochs * len(loader)
    start = time.perf_counter()
    for epoch in range(max_epochs):
        _set_sampler_epoch(loader, epoch)
        progress = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{max_epochs}", disable=rank != 0,
                        dynamic_ncols=True, leave=False)
        window: Dict[str, List[float]] = {}
        tick = time.perf_counter()
        for inner, batch in enumerate(loader):
            data_time = time.perf_counter() - tick
            set_lr(optimizer, schedule.lr_at(epoch, iteration))
            log_vars = train_step(model, to_device(batch, device), optimizer, grad_clip)
            iteration += 1
            log_vars.update(time=time.perf_counter() - tick, data_time=data_time)
            for name, value in log_vars.items():
                window.setdefault(name, []).append(value)
            progress.update(1)
            progress.set_postfix(loss=f"{log_vars['loss']:.3f}", lr=f"{current_lr(optimizer):.2e}")
            if (inner + 1) % log_interval == 0 or inner + 1 == len(loader):
                averages = {name: float(np.mean(values)) for name, values in window.items()}
                window = {}
                eta = datetime.timedelta(seconds=int((time.perf_counter() - start) / iteration
                                                     * (total_iters - iteration)))
                record = dict(mode="train", epoch=epoch + 1, iter=inner + 1, lr=current_lr(optimizer), **averages)
                log.write(record, f"Epoch [{epoch + 1}][{inner + 1}/{len(loader)}]\tlr: {current_lr(optimizer):.3e}, "
                                  f"eta: {eta}, {_format_values(averages)}")
            tick = time.perf_counter()
        progress.close()

        if rank == 0 and ((epoch + 1) % checkpoint_interval == 0 or epoch + 1 == max_epochs):
            _save(model, work_dir, epoch + 1, iteration, checkpoint_meta, checkpoint_cfg.get("max_keep_ckpts", -1))
        if val_loader is not None and ((epoch + 1) % eval_interval == 0 or epoch + 1 == max_epochs):
            metrics = _evaluate(model, val_loader, distributed, eval_kwargs, logger)
            if metrics is not None:
                log.write(dict(mode="val", epoch=epoch + 1, iter=iteration, **metrics),
                          f"Epoch(val) [{epoch + 1}]\t{_format_values(metrics)}")
    logger.info(f"training done in {datetime.timedelta(seconds=int(time.perf_counter() - start))}")

"""One training epoch: learning rate, optimisation step and log records for every iteration."""

import datetime
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mmdet.apis.lr_schedule import StepLrSchedule, current_lr, set_lr
from mmdet.apis.training.log import LogWindow, TrainLog, format_values
from mmdet.apis.training.optimizer import train_step
from mmdet.apis.training.settings import TrainSettings
from mmdet.utils import to_device


class TrainClock:
    """Time since training started and the estimated time left."""

    def __init__(self, total_iters: int):
        self.total_iters = total_iters
        self.start = time.perf_counter()

    def elapsed(self) -> datetime.timedelta:
        """Whole seconds since the clock was made."""
        return datetime.timedelta(seconds=int(time.perf_counter() - self.start))

    def eta(self, iterations_done: int) -> datetime.timedelta:
        """The remaining iterations at the mean pace so far (`iterations_done` >= 1)."""
        seconds_per_iter = (time.perf_counter() - self.start) / iterations_done
        return datetime.timedelta(seconds=int(seconds_per_iter * (self.total_iters - iterations_done)))


def _set_sampler_epoch(loader: DataLoader, epoch: int) -> None:
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    schedule: StepLrSchedule,
    device: torch.device,
    epoch: int,
    iteration: int,
    settings: TrainSettings,
    log: TrainLog,
    clock: TrainClock,
    show_progress: bool,
) -> int:
    """Train `model` for one pass over `loader`.

    Args:
        model: the detector in train mode, on `device`.
        loader: the training loader; its sampler is reseeded with `epoch`.
        optimizer: steps every trainable parameter.
        schedule: sets the learning rate before every iteration.
        device: where batches go.
        epoch: the epoch to train, counting from 0.
        iteration: iterations trained before this epoch.
        settings: the gradient clipping and the log interval.
        log: receives a record every `settings.log_interval` iterations and after the last one.
        clock: the training's clock, for the estimated time left.
        show_progress: draw a progress bar.

    Returns:
        Iterations trained after this epoch.
    """
    _set_sampler_epoch(loader, epoch)
    progress = tqdm(
        total=len(loader),
        desc=f"epoch {epoch + 1}/{settings.max_epochs}",
        disable=not show_progress,
        dynamic_ncols=True,
        leave=False,
    )
    window = LogWindow()
    tick = time.perf_counter()
    for inner, batch in enumerate(loader):
        data_time = time.perf_counter() - tick
        set_lr(optimizer, schedule.lr_at(epoch, iteration))
        log_vars = train_step(model, to_device(batch, device), optimizer, settings.grad_clip)
        iteration += 1
        log_vars.update(time=time.perf_counter() - tick, data_time=data_time)
        window.add(log_vars)
        progress.update(1)
        progress.set_postfix(loss=f"{log_vars['loss']:.3f}", lr=f"{current_lr(optimizer):.2e}")
        if (inner + 1) % settings.log_interval == 0 or inner + 1 == len(loader):
            averages = window.pop_averages()
            record = dict(mode="train", epoch=epoch + 1, iter=inner + 1, lr=current_lr(optimizer), **averages)
            log.write(
                record,
                f"Epoch [{epoch + 1}][{inner + 1}/{len(loader)}]\tlr: {current_lr(optimizer):.3e}, "
                f"eta: {clock.eta(iteration)}, {format_values(averages)}",
            )
        tick = time.perf_counter()
    progress.close()
    return iteration

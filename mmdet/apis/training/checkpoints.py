"""Epoch checkpoints of the training loop: `epoch_<n>.pth`, `latest.pth`, and pruning of the oldest."""

import time
from pathlib import Path

from torch import nn

from mmdet.utils import save_checkpoint

CHECKPOINT_PATTERN = "epoch_{}.pth"


def save_epoch_checkpoint(
    model: nn.Module, work_dir: Path, epoch: int, iteration: int, meta: dict, max_keep: int
) -> None:
    """Write `epoch_<epoch>.pth` and `latest.pth` (weights and meta, no optimizer state).

    Args:
        model: the detector, or its DistributedDataParallel wrapper (the saved keys carry no `module.` prefix).
        work_dir: the folder of the checkpoints.
        epoch: the finished epoch, 1-based.
        iteration: the number of iterations trained so far.
        meta: stored under the checkpoint's `meta`, with `epoch`, `iter` and `time` added.
        max_keep: keep only the newest `max_keep` epoch checkpoints; < 1 keeps all.
    """
    meta = dict(meta, epoch=epoch, iter=iteration, time=time.asctime())
    save_checkpoint(model, str(work_dir / CHECKPOINT_PATTERN.format(epoch)), meta=meta)
    save_checkpoint(model, str(work_dir / "latest.pth"), meta=meta)
    if max_keep > 0:
        saved = sorted(work_dir.glob(CHECKPOINT_PATTERN.format("*")), key=lambda path: int(path.stem.split("_")[1]))
        for old in saved[:-max_keep]:
            old.unlink()

"""mmcv's `lr_config` with `policy='step'`: step decay by epoch (or iteration), optionally after a warm-up.

    regular lr = base_lr * gamma ** (number of steps already reached)
    warm-up (iteration i < warmup_iters), scaling the regular lr:
        linear:   1 - (1 - i / warmup_iters) * (1 - warmup_ratio)
        exp:      warmup_ratio ** (1 - i / warmup_iters)
        constant: warmup_ratio
`step` is a list of epochs (iterations when `by_epoch=False`) at which lr is multiplied by gamma, or an int
meaning every that many; epochs and iterations count from 0.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from mmdet.utils.errors import ConfigValueError

WARMUP_KINDS = ("linear", "exp", "constant")


@dataclass(frozen=True)
class StepLrSchedule:
    base_lr: float
    step: Union[int, Sequence[int]] = field(default_factory=list)
    gamma: float = 0.1
    by_epoch: bool = True
    warmup: Optional[str] = None
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    min_lr: Optional[float] = None

    def __post_init__(self) -> None:
        if self.warmup is not None and self.warmup not in WARMUP_KINDS:
            raise ConfigValueError(f"lr_config.warmup must be one of {WARMUP_KINDS} or None, got {self.warmup!r}")
        if self.warmup is not None and self.warmup_iters <= 0:
            raise ConfigValueError(
                f"lr_config.warmup_iters must be positive with warmup={self.warmup!r}, got {self.warmup_iters!r}"
            )
        if not 0 < self.warmup_ratio <= 1:
            raise ConfigValueError(f"lr_config.warmup_ratio must be in (0, 1], got {self.warmup_ratio!r}")
        if isinstance(self.step, int):
            if self.step <= 0:
                raise ConfigValueError(f"lr_config.step as an int must be positive, got {self.step!r}")
        elif list(self.step) != sorted(self.step) or any(s < 0 for s in self.step):
            raise ConfigValueError(
                f"lr_config.step must be an increasing list of non-negative numbers, got {self.step!r}"
            )

    def regular_lr(self, progress: int) -> float:
        """The lr without warm-up at `progress` (the epoch when by_epoch, else the iteration)."""
        if isinstance(self.step, int):
            num_decays = progress // self.step
        else:
            num_decays = sum(1 for s in self.step if progress >= s)
        lr = self.base_lr * self.gamma**num_decays
        return lr if self.min_lr is None else max(lr, self.min_lr)

    def lr_at(self, epoch: int, iteration: int) -> float:
        """The lr for global `iteration` (counted over all epochs) within `epoch`."""
        lr = self.regular_lr(epoch if self.by_epoch else iteration)
        if self.warmup is None or iteration >= self.warmup_iters:
            return lr
        done = iteration / self.warmup_iters
        if self.warmup == "linear":
            return lr * (1 - (1 - done) * (1 - self.warmup_ratio))
        if self.warmup == "exp":
            return lr * self.warmup_ratio ** (1 - done)
        return lr * self.warmup_ratio

    @classmethod
    def from_config(cls, lr_config: dict, base_lr: float) -> "StepLrSchedule":
        """Build from an mmdetection `lr_config` dict (only `policy='step'` is known here)."""
        options = dict(lr_config)
        policy = options.pop("policy", "step")
        if str(policy).lower() != "step":
            raise ConfigValueError(f"lr_config.policy {policy!r} is not supported; expected 'step'")
        known = {"step", "gamma", "by_epoch", "warmup", "warmup_iters", "warmup_ratio", "min_lr"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigValueError(f"lr_config has unknown keys {unknown}; expected a subset of {sorted(known)}")
        if isinstance(options.get("step"), (list, tuple)):
            options["step"] = list(options["step"])
        return cls(base_lr=base_lr, **options)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the schedule's `lr` on every group, times the group's `lr_mult` (from `paramwise_cfg`) where it has one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"] if "lr_mult" in group else lr


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The schedule's lr: the lr of the first group that learns, without its `lr_mult` (0 when no group learns)."""
    for group in optimizer.param_groups:
        lr_mult = group.get("lr_mult", 1.0)
        if lr_mult != 0:
            return float(group["lr"] / lr_mult)
    return 0.0

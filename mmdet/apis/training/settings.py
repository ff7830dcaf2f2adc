"""The loop settings of a training config, checked once before anything is built.

What the config keys do (same meaning as in mmdetection 2.28):
- `runner`: `EpochBasedRunner` with `max_epochs`.
- `optimizer_config.grad_clip`: None or the keyword arguments of `clip_grad_norm_` (max_norm, norm_type).
- `checkpoint_config.interval` (epochs), optional `max_keep_ckpts` (the newest kept; < 1 keeps all); `latest.pth`
  always holds the last saved epoch.
- `log_config.interval` (iterations): a text line in `<timestamp>.log` and a json line in `<timestamp>.log.json`.
- `evaluation.interval` (epochs); its other keys go to `dataset.evaluate` (e.g. `metric='bbox'`).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mmdet.apis.test import evaluation_kwargs
from mmdet.utils.errors import ConfigValueError


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigValueError(f"{key} must be an integer, got {value!r}")
    return value


def _positive_int(value: Any, key: str) -> int:
    if _int(value, key) < 1:
        raise ConfigValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def _max_epochs(cfg) -> int:
    runner = dict(cfg.get("runner") or {})
    if runner.get("type", "EpochBasedRunner") != "EpochBasedRunner":
        raise ConfigValueError(
            f"runner.type {runner.get('type')!r} is not supported; use EpochBasedRunner with max_epochs"
        )
    return _positive_int(runner.get("max_epochs", cfg.get("total_epochs")), "runner.max_epochs")


def _grad_clip(cfg) -> Optional[dict]:
    optimizer_config = dict(cfg.get("optimizer_config") or {})
    hook_type = optimizer_config.pop("type", "OptimizerHook")
    grad_clip = optimizer_config.pop("grad_clip", None)
    if hook_type != "OptimizerHook" or optimizer_config:
        raise ConfigValueError(
            f"optimizer_config supports only grad_clip (OptimizerHook); got type={hook_type!r} "
            f"and keys {sorted(optimizer_config)}"
        )
    return None if grad_clip is None else dict(grad_clip)


@dataclass(frozen=True)
class TrainSettings:
    """How long to train and when to log, save and evaluate; epochs and iterations count from 1."""

    work_dir: Path
    max_epochs: int
    grad_clip: Optional[dict]
    log_interval: int
    checkpoint_interval: int
    max_keep_ckpts: int
    eval_interval: int
    eval_kwargs: dict

    @classmethod
    def from_config(cls, cfg) -> "TrainSettings":
        """Read and check the loop settings of `cfg`.

        Args:
            cfg: the training config (an mmengine `Config` or a dict-like with `.get`).

        Returns:
            The settings; a `ValueError` names the config key of an unsupported or invalid value.
        """
        if cfg.get("resume_from"):
            raise ConfigValueError(
                f"resume_from={cfg.resume_from!r}: resuming is not supported (checkpoints hold no "
                "optimizer state); use load_from to start from its weights"
            )
        if not cfg.get("work_dir"):
            raise ConfigValueError(
                "cfg.work_dir must be set (tools/train.py sets it from --work-dir or the config name)"
            )
        checkpoint_cfg = dict(cfg.get("checkpoint_config") or {})
        eval_cfg = dict(cfg.get("evaluation") or {})
        return cls(
            work_dir=Path(cfg.work_dir),
            max_epochs=_max_epochs(cfg),
            grad_clip=_grad_clip(cfg),
            log_interval=_positive_int(dict(cfg.get("log_config") or {}).get("interval", 50), "log_config.interval"),
            checkpoint_interval=_positive_int(checkpoint_cfg.get("interval", 1), "checkpoint_config.interval"),
            max_keep_ckpts=_int(checkpoint_cfg.get("max_keep_ckpts", -1), "checkpoint_config.max_keep_ckpts"),
            eval_interval=_positive_int(eval_cfg.get("interval", 1), "evaluation.interval"),
            eval_kwargs=evaluation_kwargs(cfg),
        )

    def checkpoint_due(self, epoch: int) -> bool:
        """Whether a checkpoint is written after `epoch` (1-based): every interval, and after the last epoch."""
        return epoch % self.checkpoint_interval == 0 or epoch == self.max_epochs

    def evaluation_due(self, epoch: int) -> bool:
        """Whether the model is evaluated after `epoch` (1-based): every interval, and after the last epoch."""
        return epoch % self.eval_interval == 0 or epoch == self.max_epochs

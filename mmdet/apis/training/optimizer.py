"""The optimizer of a training config and one optimisation step."""

from typing import Optional

import torch
from torch import nn

from mmdet.models.detectors.base import parse_losses
from mmdet.utils.errors import ConfigValueError


def build_optimizer(model: nn.Module, optimizer_cfg: dict) -> torch.optim.Optimizer:
    """One parameter group holding every trainable parameter of `model`.

    Args:
        model: the detector (or its DistributedDataParallel wrapper).
        optimizer_cfg: dict(type=<torch.optim class name>, lr=..., **the optimizer's keyword arguments).

    Returns:
        The optimizer; a `ValueError` names the bad `optimizer.*` key.
    """
    options = dict(optimizer_cfg)
    if "paramwise_cfg" in options:
        raise ConfigValueError("optimizer.paramwise_cfg is not supported: every parameter shares one group")
    name = options.pop("type", None)
    optimizer_cls = getattr(torch.optim, str(name), None)
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise ConfigValueError(f"optimizer.type must name a torch.optim optimizer (e.g. 'SGD'), got {name!r}")
    if "lr" not in options:
        raise ConfigValueError("optimizer.lr is required")
    params = [p for p in model.parameters() if p.requires_grad]
    return optimizer_cls(params, **options)


def train_step(
    model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, grad_clip: Optional[dict] = None
) -> dict[str, float]:
    """One optimisation step on `batch`.

    The total loss is the sum of every entry whose key contains 'loss' (lists are summed); the others are logged only.

    Args:
        model: the detector in train mode; `model(return_loss=True, **batch)` returns its loss dict.
        batch: a collated batch already on the model's device.
        optimizer: steps every trainable parameter.
        grad_clip: None, or the keyword arguments of `clip_grad_norm_` (max_norm, norm_type).

    Returns:
        The logged values: each loss entry, `loss` (the total) and, when clipping, `grad_norm` (before clipping).
    """
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

"""The optimizer of a training config and one optimisation step."""

from typing import Optional

import torch
from torch import nn

from mmdet.models.detectors.base import parse_losses
from mmdet.utils.errors import ConfigValueError

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
PARAMWISE_KEYS = (
    "bias_lr_mult",
    "bias_decay_mult",
    "norm_decay_mult",
    "dwconv_decay_mult",
    "custom_keys",
    "bypass_duplicate",
)


def _paramwise_groups(model: nn.Module, paramwise: dict, base_lr: float, base_wd: Optional[float]) -> list[dict]:
    """One parameter group per trainable parameter, with mmdetection's `paramwise_cfg` multipliers.

    A parameter whose full name contains a `custom_keys` key (the longest such key first, then alphabetical) takes
    that entry's `lr_mult` and `decay_mult`. Otherwise: a bias outside normalisation layers gets `bias_lr_mult`;
    weight decay is multiplied by `norm_decay_mult` for normalisation layers, by `dwconv_decay_mult` for depthwise
    convolutions, and by `bias_decay_mult` for other biases. Each group keeps its `lr_mult` so that the learning-rate
    schedule scales it. A parameter shared by two modules is an error unless `bypass_duplicate` is set, which keeps
    its first occurrence.
    """
    unknown = sorted(set(paramwise) - set(PARAMWISE_KEYS))
    if unknown:
        raise ConfigValueError(
            f"optimizer.paramwise_cfg has unknown keys {unknown}; expected a subset of {list(PARAMWISE_KEYS)}"
        )
    decay_keys = [key for key in PARAMWISE_KEYS if key.endswith("decay_mult") and key in paramwise]
    if decay_keys and base_wd is None:
        raise ConfigValueError(f"optimizer.paramwise_cfg sets {decay_keys} but the optimizer has no weight_decay")
    custom = dict(paramwise.get("custom_keys") or {})
    custom_order = sorted(sorted(custom), key=len, reverse=True)
    groups = []
    seen: set[int] = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        is_norm = isinstance(module, NORM_TYPES)
        is_dwconv = isinstance(module, nn.Conv2d) and module.in_channels == module.groups
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full_name = f"{module_name}.{name}" if module_name else name
            if id(param) in seen:
                if paramwise.get("bypass_duplicate", False):
                    continue
                raise ConfigValueError(
                    f"parameter {full_name} is shared with another module; set optimizer.paramwise_cfg."
                    "bypass_duplicate=True to give it the group of its first occurrence"
                )
            seen.add(id(param))
            lr_mult, decay_mult = 1.0, 1.0
            key = next((key for key in custom_order if key in full_name), None)
            if key is not None:
                lr_mult = float(custom[key].get("lr_mult", 1.0))
                decay_mult = float(custom[key].get("decay_mult", 1.0))
            else:
                if name == "bias" and not is_norm:
                    lr_mult = float(paramwise.get("bias_lr_mult", 1.0))
                if is_norm:
                    decay_mult = float(paramwise.get("norm_decay_mult", 1.0))
                elif is_dwconv:
                    decay_mult = float(paramwise.get("dwconv_decay_mult", 1.0))
                elif name == "bias":
                    decay_mult = float(paramwise.get("bias_decay_mult", 1.0))
            group = {"params": [param], "lr": base_lr * lr_mult, "lr_mult": lr_mult}
            if base_wd is not None:
                group["weight_decay"] = base_wd * decay_mult
            groups.append(group)
    return groups


def build_optimizer(model: nn.Module, optimizer_cfg: dict) -> torch.optim.Optimizer:
    """The optimizer of a training config.

    Without `paramwise_cfg` one parameter group holds every trainable parameter; with it, each parameter gets its
    own learning rate and weight decay (see :func:`_paramwise_groups`).

    Args:
        model: the detector (or its DistributedDataParallel wrapper).
        optimizer_cfg: dict(type=<torch.optim class name>, lr=..., paramwise_cfg=..., **the optimizer's keyword
            arguments).

    Returns:
        The optimizer; a `ValueError` names the bad `optimizer.*` key.
    """
    options = dict(optimizer_cfg)
    paramwise = options.pop("paramwise_cfg", None)
    name = options.pop("type", None)
    optimizer_cls = getattr(torch.optim, str(name), None)
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise ConfigValueError(f"optimizer.type must name a torch.optim optimizer (e.g. 'SGD'), got {name!r}")
    if "lr" not in options:
        raise ConfigValueError("optimizer.lr is required")
    if paramwise:
        module = model.module if hasattr(model, "module") else model
        return optimizer_cls(
            _paramwise_groups(module, dict(paramwise), options["lr"], options.get("weight_decay")), **options
        )
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

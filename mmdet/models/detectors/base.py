"""BaseDetector: the forward/train_step API shared by the detectors (mmdetection 2.x conventions)."""

from collections.abc import Sequence
from typing import Optional, Union

import torch
import torch.distributed as dist
from torch import nn

LossValue = Union[torch.Tensor, list[torch.Tensor]]


def sub_cfg(cfg: Optional[dict], key: str) -> Optional[dict]:
    """``cfg[key]`` or None when cfg is None or lacks the key (works for dicts and mmengine ConfigDicts)."""
    if cfg is None:
        return None
    return cfg.get(key)


def with_head_cfgs(head_cfg: dict, train_cfg: Optional[dict], test_cfg: Optional[dict]) -> dict:
    """A copy of a head's config with ``train_cfg``/``test_cfg`` filled in, as mmdetection's detectors do."""
    head_cfg = dict(head_cfg)
    head_cfg.update(train_cfg=train_cfg, test_cfg=test_cfg)
    return head_cfg


def with_pretrained(backbone_cfg: dict, pretrained: Optional[str]) -> dict:
    """Deprecated ``pretrained=`` of a detector becomes the backbone's Pretrained init_cfg."""
    backbone_cfg = dict(backbone_cfg)
    if pretrained is not None:
        backbone_cfg["init_cfg"] = dict(type="Pretrained", checkpoint=pretrained)
    return backbone_cfg


def parse_losses(losses: dict[str, LossValue]) -> tuple[torch.Tensor, dict[str, float]]:
    """Reduce each entry to a scalar (mean; a list is the sum of its means) and total those named '*loss*'.

    Returns the total (with its graph) and the logged values, averaged over processes when a process group runs.
    """
    scalars: dict[str, torch.Tensor] = {}
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            scalars[name] = value.mean()
        elif isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in value):
            scalars[name] = sum(v.mean() for v in value)
        else:
            raise TypeError(f"loss entry {name!r} must be a Tensor or a list of Tensors, got {type(value).__name__}")
    loss_terms = [value for name, value in scalars.items() if "loss" in name]
    if not loss_terms:
        raise ValueError(f"the model returned no entry whose key contains 'loss'; keys: {sorted(losses)}")
    total = sum(loss_terms)
    log_vars = {name: value.detach().clone() for name, value in scalars.items()}
    log_vars["loss"] = total.detach().clone()
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
        for value in log_vars.values():
            dist.all_reduce(value.div_(world_size))
    return total, {name: float(value) for name, value in log_vars.items()}


class BaseDetector(nn.Module):
    """Dispatches ``forward`` to ``forward_train`` or ``simple_test`` and turns a loss dict into one loss."""

    def __init__(self, init_cfg: Optional[dict] = None):
        super().__init__()
        self.init_cfg = init_cfg
        self.CLASSES: Optional[tuple[str, ...]] = None

    @property
    def with_neck(self) -> bool:
        return getattr(self, "neck", None) is not None

    @property
    def with_shared_head(self) -> bool:
        return hasattr(self, "roi_head") and getattr(self.roi_head, "with_shared_head", False)

    @property
    def with_bbox(self) -> bool:
        roi_head = getattr(self, "roi_head", None)
        if roi_head is not None and getattr(roi_head, "with_bbox", True):
            return True
        return getattr(self, "bbox_head", None) is not None

    @property
    def with_mask(self) -> bool:
        return False

    def extract_feat(self, img: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Backbone, then neck when present."""
        x = self.backbone(img)
        if self.with_neck:
            x = self.neck(x)
        return x

    @staticmethod
    def set_batch_input_shape(img: torch.Tensor, img_metas: Sequence[dict]) -> None:
        """Record the padded batch size (H, W) in each meta that lacks it; heads use it for anchor validity."""
        batch_input_shape = tuple(img.shape[-2:])
        for meta in img_metas:
            meta.setdefault("batch_input_shape", batch_input_shape)

    def forward_train(self, img: torch.Tensor, img_metas: list[dict], *args, **kwargs) -> dict[str, LossValue]:
        raise NotImplementedError

    def simple_test(self, img: torch.Tensor, img_metas: list[dict], rescale: bool = False, **kwargs) -> list:
        raise NotImplementedError

    def forward(self, img, img_metas, return_loss: bool = True, **kwargs):
        """``return_loss=True``: ``forward_train(img, img_metas, **kwargs)``;
        else ``simple_test(img, img_metas, **kwargs)``.

        For the test path, mmdetection's augmentation-list form (``[img]``, ``[img_metas]``) with one entry is accepted
        too.
        """
        if return_loss:
            return self.forward_train(img, img_metas, **kwargs)
        if isinstance(img, (list, tuple)):
            if len(img) != 1:
                raise NotImplementedError(f"test-time augmentation is not supported (got {len(img)} augmented inputs)")
            img, img_metas = img[0], img_metas[0]
        if img.shape[0] != len(img_metas):
            raise ValueError(f"batch has {img.shape[0]} images but {len(img_metas)} img_metas")
        return self.simple_test(img, img_metas, **kwargs)

    parse_losses = staticmethod(parse_losses)

    def train_step(self, data: dict, optimizer=None) -> dict:
        """One training forward: ``dict(loss, log_vars, num_samples)``; the caller runs backward and the optimizer
        step."""
        losses = self(**data)
        loss, log_vars = self.parse_losses(losses)
        return dict(loss=loss, log_vars=log_vars, num_samples=len(data["img_metas"]))

    def val_step(self, data: dict, optimizer=None) -> dict:
        """Same as train_step (losses on validation data), kept for mmdetection's runner API."""
        return self.train_step(data, optimizer)

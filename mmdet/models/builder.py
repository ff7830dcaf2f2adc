"""Registry and builders for every nn.Module that a config can name (mmdetection 2.x names kept)."""

from typing import Optional

from mmengine.registry import Registry

MODELS = Registry("models", scope="qdrop_det")
# mmdetection 2.x had one registry per kind; they share one here, the builder names stay.
BACKBONES = NECKS = HEADS = ROI_EXTRACTORS = SHARED_HEADS = LOSSES = DETECTORS = MODELS


def _build(cfg: dict, **defaults):
    cfg = dict(cfg)
    for key, value in defaults.items():
        if value is not None:
            cfg.setdefault(key, value)
    return MODELS.build(cfg)


def build_backbone(cfg: dict):
    return _build(cfg)


def build_neck(cfg: dict):
    return _build(cfg)


def build_roi_extractor(cfg: dict):
    return _build(cfg)


def build_shared_head(cfg: dict):
    return _build(cfg)


def build_head(cfg: dict):
    return _build(cfg)


def build_loss(cfg: dict):
    return _build(cfg)


def build_detector(cfg: dict, train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None):
    """Build a detector; `train_cfg`/`test_cfg` given here are only used when the model dict lacks them."""
    return _build(cfg, train_cfg=train_cfg, test_cfg=test_cfg)

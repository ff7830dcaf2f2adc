"""Models: importing this package registers every backbone, neck, head, loss and detector in ``MODELS``."""

from . import backbones, dense_heads, detectors, losses, necks, roi_heads  # noqa: F401  (registration)
from .backbones import ResNet
from .builder import (
    BACKBONES,
    DETECTORS,
    HEADS,
    LOSSES,
    MODELS,
    NECKS,
    ROI_EXTRACTORS,
    SHARED_HEADS,
    build_backbone,
    build_detector,
    build_head,
    build_loss,
    build_neck,
    build_roi_extractor,
    build_shared_head,
)
from .detectors import (
    ATSS,
    FCOS,
    GFL,
    BaseDetector,
    CascadeRCNN,
    FasterRCNN,
    MaskRCNN,
    RetinaNet,
    SingleStageDetector,
    TwoStageDetector,
)
from .necks import FPN

__all__ = [
    "BACKBONES",
    "DETECTORS",
    "HEADS",
    "LOSSES",
    "MODELS",
    "NECKS",
    "ROI_EXTRACTORS",
    "SHARED_HEADS",
    "build_backbone",
    "build_detector",
    "build_head",
    "build_loss",
    "build_neck",
    "build_roi_extractor",
    "build_shared_head",
    "BaseDetector",
    "CascadeRCNN",
    "FasterRCNN",
    "MaskRCNN",
    "ATSS",
    "FCOS",
    "GFL",
    "RetinaNet",
    "SingleStageDetector",
    "TwoStageDetector",
    "ResNet",
    "FPN",
]

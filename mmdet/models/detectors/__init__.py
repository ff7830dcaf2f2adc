from .atss import ATSS
from .base import BaseDetector
from .cascade_rcnn import CascadeRCNN
from .faster_rcnn import FasterRCNN
from .fcos import FCOS
from .gfl import GFL
from .mask_rcnn import MaskRCNN
from .retinanet import RetinaNet
from .single_stage import SingleStageDetector
from .two_stage import TwoStageDetector

__all__ = [
    "ATSS",
    "BaseDetector",
    "CascadeRCNN",
    "FasterRCNN",
    "FCOS",
    "GFL",
    "MaskRCNN",
    "RetinaNet",
    "SingleStageDetector",
    "TwoStageDetector",
]

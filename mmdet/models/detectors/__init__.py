from .base import BaseDetector
from .faster_rcnn import FasterRCNN
from .retinanet import RetinaNet
from .single_stage import SingleStageDetector
from .two_stage import TwoStageDetector

__all__ = ["BaseDetector", "FasterRCNN", "RetinaNet", "SingleStageDetector", "TwoStageDetector"]

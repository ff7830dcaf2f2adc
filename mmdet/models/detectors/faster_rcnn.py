from ..builder import MODELS
from .two_stage import TwoStageDetector


@MODELS.register_module()
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN (Ren et al., 2015): ResNet-FPN, RPNHead, StandardRoIHead."""

from ..builder import MODELS
from .two_stage import TwoStageDetector


@MODELS.register_module()
class CascadeRCNN(TwoStageDetector):
    """Cascade R-CNN (Cai and Vasconcelos, 2018): ResNet-FPN, RPNHead, CascadeRoIHead (``train_cfg.rcnn`` is a list
    with one assigner/sampler config per stage)."""

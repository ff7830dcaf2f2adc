from ..builder import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class FCOS(SingleStageDetector):
    """FCOS (Tian et al., 2019): ResNet-FPN (P3-P7) with the anchor-free FCOSHead."""

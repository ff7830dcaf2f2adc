from ..builder import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class RetinaNet(SingleStageDetector):
    """RetinaNet (Lin et al., 2017): ResNet-FPN with extra P6/P7 convs and RetinaHead."""

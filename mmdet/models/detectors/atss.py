from ..builder import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class ATSS(SingleStageDetector):
    """ATSS (Zhang et al., 2020): ResNet-FPN (extra P6/P7 on the outputs) and ATSSHead."""

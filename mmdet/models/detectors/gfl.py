from ..builder import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class GFL(SingleStageDetector):
    """Generalized Focal Loss detector (Li et al., 2020): ResNet-FPN (extra P6/P7 on the outputs) and GFLHead."""

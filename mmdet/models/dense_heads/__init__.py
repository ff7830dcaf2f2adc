from .anchor_free_head import AnchorFreeHead
from .anchor_head import AnchorHead
from .atss_head import ATSSHead
from .fcos_head import FCOSHead
from .gfl_head import GFLHead, Integral
from .retina_head import RetinaHead
from .rpn_head import RPNHead

__all__ = ["AnchorFreeHead", "AnchorHead", "ATSSHead", "FCOSHead", "GFLHead", "Integral", "RetinaHead", "RPNHead"]

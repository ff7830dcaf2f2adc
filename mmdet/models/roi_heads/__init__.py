from .bbox_heads import Shared2FCBBoxHead
from .roi_extractors import RoIAlign, SingleRoIExtractor
from .standard_roi_head import StandardRoIHead

__all__ = ["Shared2FCBBoxHead", "RoIAlign", "SingleRoIExtractor", "StandardRoIHead"]

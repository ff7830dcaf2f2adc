from .bbox_heads import Shared2FCBBoxHead
from .cascade_roi_head import CascadeRoIHead
from .roi_extractors import RoIAlign, SingleRoIExtractor
from .standard_roi_head import StandardRoIHead

__all__ = ["CascadeRoIHead", "Shared2FCBBoxHead", "RoIAlign", "SingleRoIExtractor", "StandardRoIHead"]

from .bbox_heads import Shared2FCBBoxHead
from .cascade_roi_head import CascadeRoIHead
from .mask_heads import FCNMaskHead, paste_masks_in_image
from .roi_extractors import RoIAlign, SingleRoIExtractor
from .standard_roi_head import StandardRoIHead

__all__ = [
    "CascadeRoIHead",
    "FCNMaskHead",
    "paste_masks_in_image",
    "Shared2FCBBoxHead",
    "RoIAlign",
    "SingleRoIExtractor",
    "StandardRoIHead",
]

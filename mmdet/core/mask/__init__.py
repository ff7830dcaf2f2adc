from .mask_target import mask_target, mask_target_single
from .utils import encode_mask, encode_mask_results, encode_results, is_mask_result, segmentation_to_bitmap

__all__ = [
    "mask_target",
    "mask_target_single",
    "encode_mask",
    "encode_mask_results",
    "encode_results",
    "is_mask_result",
    "segmentation_to_bitmap",
]

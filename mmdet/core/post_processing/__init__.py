from .nms import batched_nms, multiclass_nms
from .topk import sorted_topk

__all__ = ["batched_nms", "multiclass_nms", "sorted_topk"]

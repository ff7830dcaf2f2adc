from .nms import batched_nms, multiclass_nms

__all__ = ["batched_nms", "multiclass_nms"]

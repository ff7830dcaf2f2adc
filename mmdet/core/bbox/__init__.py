from .assigners import AssignResult, MaxIoUAssigner
from .coder import DeltaXYWHBBoxCoder
from .iou import bbox_overlaps
from .samplers import PseudoSampler, RandomSampler, SamplingResult
from .transforms import bbox2result, bbox2roi

__all__ = [
    "AssignResult",
    "MaxIoUAssigner",
    "DeltaXYWHBBoxCoder",
    "bbox_overlaps",
    "PseudoSampler",
    "RandomSampler",
    "SamplingResult",
    "bbox2result",
    "bbox2roi",
]

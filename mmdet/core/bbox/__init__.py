from .assigners import AssignResult, MaxIoUAssigner
from .atss_assigner import ATSSAssigner
from .coder import DeltaXYWHBBoxCoder
from .distance import DistancePointBBoxCoder, bbox2distance, distance2bbox
from .iou import bbox_overlaps
from .samplers import PseudoSampler, RandomSampler, SamplingResult
from .transforms import bbox2result, bbox2roi

__all__ = [
    "AssignResult",
    "ATSSAssigner",
    "MaxIoUAssigner",
    "DeltaXYWHBBoxCoder",
    "DistancePointBBoxCoder",
    "bbox2distance",
    "distance2bbox",
    "bbox_overlaps",
    "PseudoSampler",
    "RandomSampler",
    "SamplingResult",
    "bbox2result",
    "bbox2roi",
]

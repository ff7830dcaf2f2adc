"""Anchors, box coding, assignment and sampling, and post-processing shared by the heads."""

from .anchor import AnchorGenerator, MlvlPointGenerator
from .bbox import (
    AssignResult,
    ATSSAssigner,
    DeltaXYWHBBoxCoder,
    DistancePointBBoxCoder,
    MaxIoUAssigner,
    PseudoSampler,
    RandomSampler,
    SamplingResult,
    bbox2distance,
    bbox2result,
    bbox2roi,
    bbox_overlaps,
    distance2bbox,
)
from .builder import (
    TASK_UTILS,
    build_anchor_generator,
    build_assigner,
    build_bbox_coder,
    build_prior_generator,
    build_sampler,
)
from .mask import encode_mask, encode_mask_results, encode_results, mask_target, segmentation_to_bitmap
from .post_processing import batched_nms, multiclass_nms, sorted_topk

__all__ = [
    "AnchorGenerator",
    "MlvlPointGenerator",
    "ATSSAssigner",
    "AssignResult",
    "DeltaXYWHBBoxCoder",
    "DistancePointBBoxCoder",
    "bbox2distance",
    "distance2bbox",
    "MaxIoUAssigner",
    "PseudoSampler",
    "RandomSampler",
    "SamplingResult",
    "bbox2result",
    "bbox2roi",
    "bbox_overlaps",
    "TASK_UTILS",
    "build_anchor_generator",
    "build_assigner",
    "build_bbox_coder",
    "build_prior_generator",
    "build_sampler",
    "encode_mask",
    "encode_mask_results",
    "encode_results",
    "mask_target",
    "segmentation_to_bitmap",
    "batched_nms",
    "multiclass_nms",
    "sorted_topk",
]

from .accuracy import accuracy
from .cross_entropy_loss import CrossEntropyLoss, binary_cross_entropy, cross_entropy, mask_cross_entropy
from .focal_loss import FocalLoss, sigmoid_focal_loss
from .gfocal_loss import DistributionFocalLoss, QualityFocalLoss, distribution_focal_loss, quality_focal_loss
from .iou_loss import GIoULoss, IoULoss, aligned_iou_giou, giou_loss, iou_loss
from .l1_loss import L1Loss, SmoothL1Loss, l1_loss, smooth_l1_loss
from .utils import weight_reduce_loss

__all__ = [
    "accuracy",
    "CrossEntropyLoss",
    "binary_cross_entropy",
    "cross_entropy",
    "mask_cross_entropy",
    "FocalLoss",
    "sigmoid_focal_loss",
    "DistributionFocalLoss",
    "QualityFocalLoss",
    "distribution_focal_loss",
    "quality_focal_loss",
    "GIoULoss",
    "IoULoss",
    "aligned_iou_giou",
    "giou_loss",
    "iou_loss",
    "L1Loss",
    "SmoothL1Loss",
    "l1_loss",
    "smooth_l1_loss",
    "weight_reduce_loss",
]

from .accuracy import accuracy
from .cross_entropy_loss import CrossEntropyLoss, binary_cross_entropy, cross_entropy
from .focal_loss import FocalLoss, sigmoid_focal_loss
from .l1_loss import L1Loss, SmoothL1Loss, l1_loss, smooth_l1_loss
from .utils import weight_reduce_loss

__all__ = [
    "accuracy",
    "CrossEntropyLoss",
    "binary_cross_entropy",
    "cross_entropy",
    "FocalLoss",
    "sigmoid_focal_loss",
    "L1Loss",
    "SmoothL1Loss",
    "l1_loss",
    "smooth_l1_loss",
    "weight_reduce_loss",
]

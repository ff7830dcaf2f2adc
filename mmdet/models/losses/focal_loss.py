"""Sigmoid focal loss (RetinaNet): -alpha_t * (1 - p_t)^gamma * ln(p_t) per (sample, class)."""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..builder import MODELS
from .utils import check_reduction, weight_reduce_loss


def sigmoid_focal_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    gamma: float = 2.0,
    alpha: float = 0.25,
    reduction: str = "mean",
    avg_factor: Optional[float] = None,
) -> torch.Tensor:
    """Focal loss on logits `(N, C)`; integer `target (N,)` with `C` meaning background (all-zero one-hot).

    A per-sample `weight (N,)` is broadcast over the classes.
    """
    num_classes = pred.size(1)
    if target.dim() == 1:
        target = F.one_hot(target, num_classes=num_classes + 1)[:, :num_classes]
    target = target.to(pred.dtype)
    prob = pred.sigmoid()
    one_minus_pt = prob * (1 - target) + (1 - prob) * target
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    # BCE with logits is -ln(p_t), computed stably.
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none") * alpha_t * one_minus_pt.pow(gamma)
    if weight is not None and weight.dim() == 1:
        weight = weight.reshape(-1, 1)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class FocalLoss(nn.Module):
    def __init__(
        self,
        use_sigmoid: bool = True,
        gamma: float = 2.0,
        alpha: float = 0.25,
        reduction: str = "mean",
        loss_weight: float = 1.0,
    ):
        super().__init__()
        if not use_sigmoid:
            raise ValueError("FocalLoss: only use_sigmoid=True is supported")
        self.use_sigmoid = use_sigmoid
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = check_reduction(reduction, "FocalLoss")
        self.loss_weight = loss_weight

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: Optional[torch.Tensor] = None,
        avg_factor: Optional[float] = None,
        reduction_override: Optional[str] = None,
    ) -> torch.Tensor:
        reduction = check_reduction(reduction_override or self.reduction, "FocalLoss")
        return self.loss_weight * sigmoid_focal_loss(
            pred, target, weight, self.gamma, self.alpha, reduction, avg_factor
        )

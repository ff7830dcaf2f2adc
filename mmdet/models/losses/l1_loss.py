"""L1 and smooth-L1 box regression losses (summed over coordinates, then reduced)."""

from typing import Optional

import torch
import torch.nn as nn

from ..builder import MODELS
from .utils import check_reduction, weight_reduce_loss


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs()


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


class _RegressionLoss(nn.Module):
    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__()
        self.reduction = check_reduction(reduction, type(self).__name__)
        self.loss_weight = loss_weight

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: Optional[torch.Tensor] = None,
        avg_factor: Optional[float] = None,
        reduction_override: Optional[str] = None,
    ) -> torch.Tensor:
        reduction = check_reduction(reduction_override or self.reduction, type(self).__name__)
        if target.numel() == 0:
            # Keeps the graph (and a zero gradient) when an image or batch has no positive box.
            return pred.sum() * 0
        loss = weight_reduce_loss(self.elementwise(pred, target), weight, reduction, avg_factor)
        return self.loss_weight * loss


@MODELS.register_module()
class L1Loss(_RegressionLoss):
    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(pred, target)


@MODELS.register_module()
class SmoothL1Loss(_RegressionLoss):
    def __init__(self, beta: float = 1.0, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__(reduction, loss_weight)
        if beta <= 0:
            raise ValueError(f"SmoothL1Loss: beta must be > 0, got {beta}")
        self.beta = beta

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return smooth_l1_loss(pred, target, self.beta)

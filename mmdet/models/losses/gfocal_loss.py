"""Generalized focal losses of GFL (Li et al., 2020): Quality Focal Loss and Distribution Focal Loss."""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..builder import MODELS
from .utils import check_reduction, weight_reduce_loss


def quality_focal_loss(
    pred: torch.Tensor,
    label: torch.Tensor,
    score: torch.Tensor,
    beta: float = 2.0,
    activated: bool = False,
) -> torch.Tensor:
    """Per-sample QFL: a focal BCE towards a soft target that is the localisation quality at the gt class.

    Every element gets `BCE(p, 0) * p^beta`; at a positive sample the element of its class is replaced by
    `BCE(p, score) * |score - p|^beta`; the classes are then summed.

    Args:
        pred: `(N, C)` class logits (probabilities when `activated`).
        label: `(N,)` class indices; `C` (or any value outside `[0, C)`) means background.
        score: `(N,)` quality targets in `[0, 1]` (IoU of the predicted box with its gt), read at positives only.
        beta: the focusing exponent.
        activated: `pred` already holds probabilities (plain BCE instead of BCE with logits).

    Returns:
        `(N,)` losses, summed over the classes.
    """
    if pred.dim() != 2 or label.shape != pred.shape[:1] or score.shape != pred.shape[:1]:
        raise ValueError(
            f"quality_focal_loss: expected pred (N, C), label (N,), score (N,), got {tuple(pred.shape)}, "
            f"{tuple(label.shape)}, {tuple(score.shape)}"
        )
    bce = F.binary_cross_entropy if activated else F.binary_cross_entropy_with_logits
    prob = pred if activated else pred.sigmoid()
    loss = bce(pred, torch.zeros_like(pred), reduction="none") * prob.pow(beta)
    num_classes = pred.size(1)
    pos = torch.nonzero((label >= 0) & (label < num_classes), as_tuple=False).squeeze(1)
    if pos.numel() > 0:
        pos_label = label[pos].long()
        pos_score = score[pos].to(pred.dtype)
        focus = (pos_score - prob[pos, pos_label]).abs().pow(beta)
        loss[pos, pos_label] = bce(pred[pos, pos_label], pos_score, reduction="none") * focus
    return loss.sum(dim=1)


def distribution_focal_loss(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per-sample DFL: cross-entropy towards the two bins around a continuous target, weighted by nearness.

    With `k = floor(y)`: `CE(pred, k) * (k + 1 - y) + CE(pred, k + 1) * (y - k)`.

    Args:
        pred: `(N, n + 1)` bin logits.
        label: `(N,)` continuous targets in `[0, n)` (GFL clamps them to `n - 0.1`).

    Returns:
        `(N,)` losses.
    """
    if pred.dim() != 2 or label.shape != pred.shape[:1]:
        raise ValueError(
            f"distribution_focal_loss: expected pred (N, n + 1) and label (N,), got {tuple(pred.shape)}, "
            f"{tuple(label.shape)}"
        )
    left = label.long()
    right = left + 1
    weight_left = right.to(label.dtype) - label
    weight_right = label - left.to(label.dtype)
    return (
        F.cross_entropy(pred, left, reduction="none") * weight_left
        + F.cross_entropy(pred, right, reduction="none") * weight_right
    )


@MODELS.register_module()
class QualityFocalLoss(nn.Module):
    """QFL (`use_sigmoid=True` only), called as `loss(pred, (labels, scores), weight, avg_factor)`."""

    def __init__(
        self,
        use_sigmoid: bool = True,
        beta: float = 2.0,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        activated: bool = False,
    ):
        super().__init__()
        if not use_sigmoid:
            raise ValueError("QualityFocalLoss: only use_sigmoid=True is supported")
        self.use_sigmoid = use_sigmoid
        self.beta = beta
        self.reduction = check_reduction(reduction, "QualityFocalLoss")
        self.loss_weight = loss_weight
        self.activated = activated

    def forward(
        self,
        pred: torch.Tensor,
        target: tuple[torch.Tensor, torch.Tensor],
        weight: Optional[torch.Tensor] = None,
        avg_factor: Optional[float] = None,
        reduction_override: Optional[str] = None,
    ) -> torch.Tensor:
        """Weighted, reduced QFL.

        Args:
            pred: `(N, C)` class logits.
            target: `(labels (N,), scores (N,))`: class index (`C` = background) and quality target.
            weight: `(N,)` per-sample weights (label weights).
            avg_factor: with reduction 'mean', the loss is `sum / (avg_factor + float32 eps)`.
            reduction_override: 'none', 'mean' or 'sum' instead of the configured reduction.

        Returns:
            A scalar (`(N,)` with reduction 'none'), times `loss_weight`.
        """
        if not isinstance(target, (tuple, list)) or len(target) != 2:
            raise TypeError("QualityFocalLoss: target must be a pair (labels (N,), scores (N,))")
        reduction = check_reduction(reduction_override or self.reduction, "QualityFocalLoss")
        label, score = target
        loss = quality_focal_loss(pred, label, score, self.beta, self.activated)
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class DistributionFocalLoss(nn.Module):
    """DFL over `(N, n + 1)` bin logits and `(N,)` continuous targets."""

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__()
        self.reduction = check_reduction(reduction, "DistributionFocalLoss")
        self.loss_weight = loss_weight

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: Optional[torch.Tensor] = None,
        avg_factor: Optional[float] = None,
        reduction_override: Optional[str] = None,
    ) -> torch.Tensor:
        """Weighted, reduced DFL.

        Args:
            pred: `(N, n + 1)` bin logits.
            target: `(N,)` continuous targets in bin units.
            weight: `(N,)` per-sample weights.
            avg_factor: with reduction 'mean', the loss is `sum / (avg_factor + float32 eps)`.
            reduction_override: 'none', 'mean' or 'sum' instead of the configured reduction.

        Returns:
            A scalar (`(N,)` with reduction 'none'), times `loss_weight`.
        """
        reduction = check_reduction(reduction_override or self.reduction, "DistributionFocalLoss")
        loss = distribution_focal_loss(pred, target)
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)

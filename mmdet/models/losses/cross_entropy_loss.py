"""Softmax cross-entropy (RoI head), sigmoid binary cross-entropy (RPN) and the mask head's per-class BCE."""

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..builder import MODELS
from .utils import check_reduction, weight_reduce_loss


def cross_entropy(
    pred: torch.Tensor,
    label: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    avg_factor: Optional[float] = None,
    class_weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Softmax cross-entropy over the last dimension of `pred (N, C)` with integer labels `(N,)`."""
    loss = F.cross_entropy(pred, label, weight=class_weight, reduction="none")
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def binary_cross_entropy(
    pred: torch.Tensor,
    label: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    avg_factor: Optional[float] = None,
    class_weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Sigmoid BCE on logits `(N, C)`.

    Integer labels `(N,)` are turned into one-hot targets: label `c < C` sets column `c`; label `C` (background)
    is all zeros. Per-sample weights `(N,)` are broadcast over the C columns.
    """
    if pred.dim() != label.dim():
        num_classes = pred.size(-1)
        in_range = (label >= 0) & (label < num_classes)
        target = pred.new_zeros(pred.shape)
        target[in_range, label[in_range]] = 1
        label = target
        if weight is not None:
            weight = weight.reshape(-1, 1).expand(-1, num_classes)
    loss = F.binary_cross_entropy_with_logits(pred, label.float(), pos_weight=class_weight, reduction="none")
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def mask_cross_entropy(
    pred: torch.Tensor,
    target: torch.Tensor,
    label: torch.Tensor,
    reduction: str = "mean",
    avg_factor: Optional[float] = None,
    class_weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Sigmoid BCE between each RoI's mask logits of its own class, `pred[i, label[i]]` of `pred (N, C, h, w)`,
    and its target `(N, h, w)`; the mean over all pixels of all RoIs, shaped `(1,)` (mmdetection's)."""
    if reduction != "mean" or avg_factor is not None:
        raise ValueError("mask_cross_entropy: only reduction='mean' without avg_factor is supported")
    rows = torch.arange(pred.size(0), dtype=torch.long, device=pred.device)
    pred_slice = pred[rows, label.long()]
    return F.binary_cross_entropy_with_logits(pred_slice, target.float(), weight=class_weight, reduction="mean")[None]


@MODELS.register_module()
class CrossEntropyLoss(nn.Module):
    def __init__(
        self,
        use_sigmoid: bool = False,
        use_mask: bool = False,
        reduction: str = "mean",
        class_weight: Optional[Sequence[float]] = None,
        loss_weight: float = 1.0,
    ):
        super().__init__()
        if use_sigmoid and use_mask:
            raise ValueError("CrossEntropyLoss: use_sigmoid and use_mask cannot both be True")
        self.use_sigmoid = use_sigmoid
        self.use_mask = use_mask
        self.reduction = check_reduction(reduction, "CrossEntropyLoss")
        self.class_weight = class_weight
        self.loss_weight = loss_weight
        if use_mask:
            self.criterion = mask_cross_entropy
        else:
            self.criterion = binary_cross_entropy if use_sigmoid else cross_entropy

    def forward(
        self,
        cls_score: torch.Tensor,
        label: torch.Tensor,
        weight: Optional[torch.Tensor] = None,
        avg_factor: Optional[float] = None,
        reduction_override: Optional[str] = None,
    ) -> torch.Tensor:
        reduction = check_reduction(reduction_override or self.reduction, "CrossEntropyLoss")
        class_weight = None if self.class_weight is None else cls_score.new_tensor(self.class_weight)
        loss = self.criterion(
            cls_score, label, weight, reduction=reduction, avg_factor=avg_factor, class_weight=class_weight
        )
        return self.loss_weight * loss

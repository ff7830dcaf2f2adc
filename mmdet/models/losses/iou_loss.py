"""IoU-based box losses of the anchor-free heads (FCOS, ATSS, GFL): IoU loss and generalised IoU loss.

Both compare aligned pairs of decoded boxes `(x1, y1, x2, y2)` and keep mmdetection 2.28's conventions: plain areas
(no +1), the union floored at `eps`, and a weight that is all zero (no positive box) giving a zero loss that keeps the
graph.
"""

from typing import Optional

import torch
import torch.nn as nn

from ..builder import MODELS
from .utils import check_reduction, weight_reduce_loss

_IOU_MODES = ("linear", "square", "log")


def aligned_iou_giou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, giou: bool = False) -> torch.Tensor:
    """IoU (or GIoU) of row `i` of `pred` with row `i` of `target`.

    Args:
        pred: `(N, 4)` boxes.
        target: `(N, 4)` boxes.
        eps: floor of the union (and, for GIoU, of the enclosing box's area).
        giou: return `IoU - (enclosing area - union) / enclosing area` instead of the IoU.

    Returns:
        `(N,)` overlaps.
    """
    if pred.shape != target.shape or pred.size(-1) != 4:
        raise ValueError(
            f"aligned_iou_giou: expected two (N, 4) tensors, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    area_pred = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_target = (target[..., 2] - target[..., 0]) * (target[..., 3] - target[..., 1])
    inter_wh = (torch.min(pred[..., 2:], target[..., 2:]) - torch.max(pred[..., :2], target[..., :2])).clamp(min=0)
    overlap = inter_wh[..., 0] * inter_wh[..., 1]
    union = (area_pred + area_target - overlap).clamp(min=eps)
    ious = overlap / union
    if not giou:
        return ious
    enclose_wh = (torch.max(pred[..., 2:], target[..., 2:]) - torch.min(pred[..., :2], target[..., :2])).clamp(min=0)
    enclose_area = (enclose_wh[..., 0] * enclose_wh[..., 1]).clamp(min=eps)
    return ious - (enclose_area - union) / enclose_area


def iou_loss(pred: torch.Tensor, target: torch.Tensor, mode: str = "log", eps: float = 1e-6) -> torch.Tensor:
    """Per-pair IoU loss of `(N, 4)` boxes, `(N,)`.

    The IoU is clamped at `eps` first; then `mode='log'` gives `-ln(iou)`, `'linear'` `1 - iou`, `'square'` `1 - iou^2`.
    """
    if mode not in _IOU_MODES:
        raise ValueError(f"iou_loss: mode must be one of {_IOU_MODES}, got {mode!r}")
    ious = aligned_iou_giou(pred, target).clamp(min=eps)
    if mode == "linear":
        return 1 - ious
    if mode == "square":
        return 1 - ious * ious
    return -ious.log()


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-pair `1 - GIoU` of `(N, 4)` boxes, `(N,)` (`eps` floors the union and the enclosing area)."""
    return 1 - aligned_iou_giou(pred, target, eps=eps, giou=True)


class _BoxOverlapLoss(nn.Module):
    """Shared forward: the weighting and reduction of mmdetection's IoU-family losses."""

    def __init__(self, eps: float, reduction: str, loss_weight: float):
        super().__init__()
        self.eps = eps
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
        """Weighted, reduced loss of aligned box pairs.

        Args:
            pred: `(N, 4)` predicted boxes.
            target: `(N, 4)` target boxes.
            weight: `(N,)` per-pair weights, or `(N, 4)` (averaged over the last dimension, as mmdetection does).
            avg_factor: with reduction 'mean', the loss is `sum / (avg_factor + float32 eps)`.
            reduction_override: 'none', 'mean' or 'sum' instead of the configured reduction.

        Returns:
            A scalar (or `(N,)` with reduction 'none'), times `loss_weight`. When `weight` has no positive entry the
            result is `sum(pred * weight)` (zero, graph kept) and `loss_weight` is not applied, as in mmdetection.
        """
        reduction = check_reduction(reduction_override or self.reduction, type(self).__name__)
        if weight is not None and not torch.any(weight > 0) and reduction != "none":
            if pred.dim() == weight.dim() + 1:
                weight = weight.unsqueeze(1)
            return (pred * weight).sum()
        if weight is not None and weight.dim() > 1:
            if weight.shape != pred.shape:
                raise ValueError(
                    f"{type(self).__name__}: weight {tuple(weight.shape)} must be (N,) "
                    f"or match pred {tuple(pred.shape)}"
                )
            weight = weight.mean(-1)
        loss = weight_reduce_loss(self.elementwise(pred, target), weight, reduction, avg_factor)
        return self.loss_weight * loss


@MODELS.register_module()
class IoULoss(_BoxOverlapLoss):
    """`-ln(max(IoU, eps))` per box pair (mmdetection's default mode 'log'; 'linear' and 'square' also exist).

    `linear=True` is mmdetection's deprecated spelling of `mode='linear'`.
    """

    def __init__(
        self,
        linear: bool = False,
        eps: float = 1e-6,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        mode: str = "log",
    ):
        super().__init__(eps, reduction, loss_weight)
        if mode not in _IOU_MODES:
            raise ValueError(f"IoULoss: mode must be one of {_IOU_MODES}, got {mode!r}")
        self.mode = "linear" if linear else mode

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return iou_loss(pred, target, mode=self.mode, eps=self.eps)


@MODELS.register_module()
class GIoULoss(_BoxOverlapLoss):
    """`1 - GIoU` per box pair (Rezatofighi et al., 2019); `eps` floors the union and the enclosing area."""

    def __init__(self, eps: float = 1e-6, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__(eps, reduction, loss_weight)

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return giou_loss(pred, target, eps=self.eps)

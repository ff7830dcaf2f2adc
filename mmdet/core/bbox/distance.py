"""Boxes as distances from a point to their four sides (FCOS, GFL), and the DistancePointBBoxCoder."""

from collections.abc import Sequence
from typing import Optional

import torch

from ..builder import TASK_UTILS


def distance2bbox(
    points: torch.Tensor, distance: torch.Tensor, max_shape: Optional[Sequence[int]] = None
) -> torch.Tensor:
    """Boxes from points and (left, top, right, bottom) distances.

    Args:
        points: `(..., 2)` points `(x, y)` (extra columns, e.g. strides, are ignored).
        distance: `(..., 4)` distances `(l, t, r, b)`.
        max_shape: `(h, w, ...)`: clip x to `[0, w]` and y to `[0, h]` (the bounds themselves reachable).

    Returns:
        `(..., 4)` boxes `(x - l, y - t, x + r, y + b)`.
    """
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    if max_shape is not None:
        height, width = max_shape[0], max_shape[1]
        x1, x2 = x1.clamp(min=0, max=width), x2.clamp(min=0, max=width)
        y1, y2 = y1.clamp(min=0, max=height), y2.clamp(min=0, max=height)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def bbox2distance(
    points: torch.Tensor, bbox: torch.Tensor, max_dis: Optional[float] = None, eps: float = 0.1
) -> torch.Tensor:
    """Distances from points to the sides of boxes.

    Args:
        points: `(..., 2)` points `(x, y)`.
        bbox: `(..., 4)` boxes `(x1, y1, x2, y2)`.
        max_dis: clamp the distances to `[0, max_dis - eps]` when given (GFL's bins).
        eps: see `max_dis`.

    Returns:
        `(..., 4)` distances `(x - x1, y - y1, x2 - x, y2 - y)`.
    """
    left = points[..., 0] - bbox[..., 0]
    top = points[..., 1] - bbox[..., 1]
    right = bbox[..., 2] - points[..., 0]
    bottom = bbox[..., 3] - points[..., 1]
    distance = torch.stack([left, top, right, bottom], dim=-1)
    if max_dis is not None:
        distance = distance.clamp(min=0, max=max_dis - eps)
    return distance


@TASK_UTILS.register_module()
class DistancePointBBoxCoder:
    """Encode boxes as point-to-side distances and back; decoded boxes are clipped to `max_shape` when
    `clip_border`."""

    def __init__(self, clip_border: bool = True):
        self.clip_border = clip_border

    def encode(
        self, points: torch.Tensor, gt_bboxes: torch.Tensor, max_dis: Optional[float] = None, eps: float = 0.1
    ) -> torch.Tensor:
        """`(N, 4)` distances of `(N, 2)` points to `(N, 4)` boxes (see `bbox2distance`)."""
        if points.size(0) != gt_bboxes.size(0) or points.size(-1) < 2 or gt_bboxes.size(-1) != 4:
            raise ValueError(
                f"DistancePointBBoxCoder.encode: points {tuple(points.shape)} and boxes {tuple(gt_bboxes.shape)} "
                "do not match (expected (N, 2) and (N, 4))"
            )
        return bbox2distance(points, gt_bboxes, max_dis, eps)

    def decode(
        self, points: torch.Tensor, pred_bboxes: torch.Tensor, max_shape: Optional[Sequence[int]] = None
    ) -> torch.Tensor:
        """`(N, 4)` boxes from `(N, 2)` points and `(N, 4)` distances (see `distance2bbox`)."""
        if points.size(0) != pred_bboxes.size(0) or points.size(-1) < 2 or pred_bboxes.size(-1) != 4:
            raise ValueError(
                f"DistancePointBBoxCoder.decode: points {tuple(points.shape)} and distances "
                f"{tuple(pred_bboxes.shape)} do not match (expected (N, 2) and (N, 4))"
            )
        return distance2bbox(points, pred_bboxes, max_shape if self.clip_border else None)

"""Pairwise box overlaps with plain areas (no +1) and the union floored at `eps`."""

import torch


def bbox_overlaps(
    bboxes1: torch.Tensor, bboxes2: torch.Tensor, mode: str = "iou", is_aligned: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """IoU (`mode='iou'`) or intersection over the area of `bboxes1` (`mode='iof'`).

    Shapes: `(M, 4)` x `(N, 4)` -> `(M, N)`, or `(N, 4)` x `(N, 4)` -> `(N,)` when `is_aligned`.
    Extra columns beyond 4 (e.g. proposal scores) are ignored.
    """
    if mode not in ("iou", "iof"):
        raise ValueError(f"bbox_overlaps: mode must be 'iou' or 'iof', got {mode!r}")
    bboxes1, bboxes2 = bboxes1[..., :4], bboxes2[..., :4]
    area1 = (bboxes1[..., 2] - bboxes1[..., 0]) * (bboxes1[..., 3] - bboxes1[..., 1])
    area2 = (bboxes2[..., 2] - bboxes2[..., 0]) * (bboxes2[..., 3] - bboxes2[..., 1])
    if is_aligned:
        if bboxes1.shape != bboxes2.shape:
            raise ValueError(
                f"bbox_overlaps: aligned mode needs equal shapes, got {tuple(bboxes1.shape)} and {tuple(bboxes2.shape)}"
            )
        top_left = torch.max(bboxes1[..., :2], bboxes2[..., :2])
        bottom_right = torch.min(bboxes1[..., 2:], bboxes2[..., 2:])
    else:
        top_left = torch.max(bboxes1[:, None, :2], bboxes2[None, :, :2])
        bottom_right = torch.min(bboxes1[:, None, 2:], bboxes2[None, :, 2:])
        area1 = area1[:, None]
        area2 = area2[None, :]
    wh = (bottom_right - top_left).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area1 + area2 - overlap if mode == "iou" else area1.expand_as(overlap)
    return overlap / union.clamp(min=eps)

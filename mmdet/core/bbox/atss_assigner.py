"""ATSSAssigner (Zhang et al., 2020): adaptive IoU threshold per gt from its nearest anchors on every level."""

from collections.abc import Sequence
from typing import Optional

import torch

from ..builder import TASK_UTILS
from .assigners import AssignResult
from .iou import bbox_overlaps


def _centres(boxes: torch.Tensor) -> torch.Tensor:
    """`(N, 2)` centres `((x1 + x2) / 2, (y1 + y2) / 2)` of `(N, 4)` boxes."""
    return torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], dim=1)


@TASK_UTILS.register_module()
class ATSSAssigner:
    """Adaptive training sample selection, as mmdetection 2.28 (`alpha=None`: plain IoU).

    Per gt: on every level the `min(topk, anchors in level)` anchors whose centres are nearest to the gt centre
    (Euclidean; equal distances: lower anchor index first) are candidates; the threshold is the mean plus the unbiased
    standard deviation of the candidates' IoUs; a candidate is positive when its IoU >= threshold and its centre lies
    inside the gt by more than 0.01 px on all four sides. An anchor positive for several gts takes the one with the
    highest IoU (equal IoUs: the lower gt index). Everything else is negative (0). With `ignore_iof_thr > 0`, anchors
    covered by an ignore box beyond it count as infinitely far (ranked last among candidates) and are ignored (-1)
    unless they still turn out positive.
    """

    def __init__(
        self,
        topk: int,
        iou_calculator: Optional[dict] = None,
        ignore_iof_thr: float = -1,
        alpha: Optional[float] = None,
    ):
        if topk < 1:
            raise ValueError(f"ATSSAssigner: topk must be >= 1, got {topk}")
        if iou_calculator is not None and dict(iou_calculator).get("type", "BboxOverlaps2D") != "BboxOverlaps2D":
            raise ValueError(
                f"ATSSAssigner: only iou_calculator=dict(type='BboxOverlaps2D') is supported, got {iou_calculator}"
            )
        if alpha is not None:
            raise ValueError("ATSSAssigner: alpha (the dynamic-cost variant) is not supported; use alpha=None")
        self.topk = topk
        self.ignore_iof_thr = ignore_iof_thr

    def assign(
        self,
        bboxes: torch.Tensor,
        num_level_bboxes: Sequence[int],
        gt_bboxes: torch.Tensor,
        gt_bboxes_ignore: Optional[torch.Tensor] = None,
        gt_labels: Optional[torch.Tensor] = None,
    ) -> AssignResult:
        """Assign anchors of all levels (concatenated, level-major) to gts.

        Args:
            bboxes: `(N, 4)` anchors, the levels one after another.
            num_level_bboxes: anchors per level, summing to N.
            gt_bboxes: `(G, 4)` gt boxes.
            gt_bboxes_ignore: `(I, 4)` boxes to ignore, used only when `ignore_iof_thr > 0`.
            gt_labels: `(G,)` labels, or None.

        Returns:
            AssignResult with `gt_inds (N,)` (0 negative, -1 ignored, k > 0 gt k - 1), `max_overlaps (N,)` (the
            assigned gt's IoU; -inf where no gt is assigned) and `labels (N,)` (-1 where not positive) when
            `gt_labels` is given.
        """
        bboxes = bboxes[:, :4]
        num_bboxes, num_gts = bboxes.size(0), gt_bboxes.size(0)
        if sum(num_level_bboxes) != num_bboxes:
            raise ValueError(f"ATSSAssigner: num_level_bboxes {list(num_level_bboxes)} do not sum to {num_bboxes}")
        gt_inds = bboxes.new_zeros((num_bboxes,), dtype=torch.long)
        if num_gts == 0 or num_bboxes == 0:
            labels = None if gt_labels is None else bboxes.new_full((num_bboxes,), -1, dtype=torch.long)
            return AssignResult(num_gts, gt_inds, bboxes.new_zeros((num_bboxes,)), labels)

        overlaps = bbox_overlaps(bboxes, gt_bboxes)  # (N, G)
        # Exact Euclidean distances (torch.cdist may take a matmul shortcut that perturbs near ties).
        offsets = _centres(bboxes)[:, None, :] - _centres(gt_bboxes)[None, :, :]  # (N, G, 2)
        distances = offsets.pow(2).sum(dim=-1).sqrt()  # (N, G)
        if self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0:
            ignored = bbox_overlaps(bboxes, gt_bboxes_ignore, mode="iof").max(dim=1).values > self.ignore_iof_thr
            distances[ignored, :] = float("inf")
            gt_inds[ignored] = -1

        # Candidates: per level, the topk nearest anchors of every gt -> (sum_l k_l, G) global anchor indices.
        candidates = []
        start = 0
        for count in num_level_bboxes:
            k = min(self.topk, count)
            if k > 0:
                order = distances[start : start + count].sort(dim=0, stable=True).indices  # (count, G)
                candidates.append(order[:k] + start)
            start += count
        candidates = torch.cat(candidates, dim=0)
        gt_index = torch.arange(num_gts, device=bboxes.device)
        candidate_ious = overlaps[candidates, gt_index[None, :]]  # (K, G)
        threshold = candidate_ious.mean(dim=0) + candidate_ious.std(dim=0, unbiased=True)  # (G,)
        positive = candidate_ious >= threshold[None, :]

        # The candidate's centre must lie inside its gt with a margin of 0.01 on every side.
        centres = _centres(bboxes)[candidates]  # (K, G, 2)
        margins = torch.stack(
            [
                centres[..., 0] - gt_bboxes[None, :, 0],
                centres[..., 1] - gt_bboxes[None, :, 1],
                gt_bboxes[None, :, 2] - centres[..., 0],
                gt_bboxes[None, :, 3] - centres[..., 1],
            ],
            dim=-1,
        )  # (K, G, 4)
        positive &= margins.min(dim=-1).values > 0.01

        # Per anchor the positive gt of highest IoU; -inf where an anchor is positive for no gt.
        positive_ious = overlaps.new_full((num_bboxes, num_gts), float("-inf"))
        gt_columns = gt_index[None, :].expand_as(candidates)
        positive_ious[candidates[positive], gt_columns[positive]] = candidate_ious[positive]
        max_overlaps, argmax = positive_ious.max(dim=1)
        assigned = max_overlaps != float("-inf")
        gt_inds[assigned] = argmax[assigned] + 1

        labels = None
        if gt_labels is not None:
            labels = gt_inds.new_full((num_bboxes,), -1)
            labels[assigned] = gt_labels[argmax[assigned]]
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)

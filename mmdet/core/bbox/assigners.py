"""MaxIoUAssigner: each candidate box becomes ignored (-1), negative (0) or the 1-based index of a gt box."""

from dataclasses import dataclass
from typing import Optional

import torch

from ..builder import TASK_UTILS
from .iou import bbox_overlaps


@dataclass
class AssignResult:
    """`gt_inds[i]`: -1 ignored, 0 negative, k > 0 assigned to gt k-1; `labels[i]`: its gt label or -1."""

    num_gts: int
    gt_inds: torch.Tensor
    max_overlaps: torch.Tensor
    labels: Optional[torch.Tensor] = None

    def add_gt_(self, gt_labels: Optional[torch.Tensor]) -> None:
        """Prepend the gt boxes as candidates assigned to themselves with IoU 1."""
        self_inds = torch.arange(1, self.num_gts + 1, dtype=torch.long, device=self.gt_inds.device)
        self.gt_inds = torch.cat([self_inds, self.gt_inds])
        self.max_overlaps = torch.cat([self.max_overlaps.new_ones(self.num_gts), self.max_overlaps])
        if self.labels is not None:
            self.labels = torch.cat([gt_labels, self.labels])


@TASK_UTILS.register_module()
class MaxIoUAssigner:
    """mmdetection 2.x max-IoU assignment (`gt_max_assign_all`, low-quality matches overwrite in gt order)."""

    def __init__(
        self,
        pos_iou_thr: float,
        neg_iou_thr: float,
        min_pos_iou: float = 0.0,
        gt_max_assign_all: bool = True,
        ignore_iof_thr: float = -1,
        ignore_wrt_candidates: bool = True,
        match_low_quality: bool = True,
    ):
        if not isinstance(neg_iou_thr, (int, float)):
            raise ValueError(f"MaxIoUAssigner: neg_iou_thr must be a number, got {neg_iou_thr!r}")
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality

    def assign(
        self,
        bboxes: torch.Tensor,
        gt_bboxes: torch.Tensor,
        gt_bboxes_ignore: Optional[torch.Tensor] = None,
        gt_labels: Optional[torch.Tensor] = None,
    ) -> AssignResult:
        bboxes = bboxes[:, :4]
        overlaps = bbox_overlaps(gt_bboxes, bboxes)
        if (
            self.ignore_iof_thr > 0
            and gt_bboxes_ignore is not None
            and gt_bboxes_ignore.numel() > 0
            and gt_bboxes.numel() > 0
            and bboxes.numel() > 0
        ):
            if self.ignore_wrt_candidates:
                ignore_overlaps = bbox_overlaps(bboxes, gt_bboxes_ignore, mode="iof").max(dim=1).values
            else:
                ignore_overlaps = bbox_overlaps(gt_bboxes_ignore, bboxes, mode="iof").max(dim=0).values
            overlaps[:, ignore_overlaps > self.ignore_iof_thr] = -1
        return self.assign_wrt_overlaps(overlaps, gt_labels)

    def assign_wrt_overlaps(self, overlaps: torch.Tensor, gt_labels: Optional[torch.Tensor] = None) -> AssignResult:
        """Assign from a `(num_gts, num_candidates)` IoU matrix."""
        num_gts, num_boxes = overlaps.shape
        gt_inds = overlaps.new_full((num_boxes,), -1, dtype=torch.long)
        if num_gts == 0 or num_boxes == 0:
            if num_gts == 0:
                gt_inds.fill_(0)
            labels = None if gt_labels is None else overlaps.new_full((num_boxes,), -1, dtype=torch.long)
            return AssignResult(num_gts, gt_inds, overlaps.new_zeros((num_boxes,)), labels)

        max_overlaps, argmax_overlaps = overlaps.max(dim=0)
        gt_inds[(max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)] = 0
        positive = max_overlaps >= self.pos_iou_thr
        gt_inds[positive] = argmax_overlaps[positive] + 1

        if self.match_low_quality:
            gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)
            eligible = gt_max_overlaps >= self.min_pos_iou
            if self.gt_max_assign_all:
                # Every candidate tying a gt's best IoU goes to that gt; the highest gt index wins
                # (later gts overwrite earlier ones).
                ties = (overlaps == gt_max_overlaps[:, None]) & eligible[:, None]
                last_gt = num_gts - 1 - ties.flip(0).to(torch.uint8).argmax(dim=0)
                gt_inds = torch.where(ties.any(dim=0), last_gt + 1, gt_inds)
            else:
                for gt_index in torch.nonzero(eligible).flatten().tolist():
                    gt_inds[gt_argmax_overlaps[gt_index]] = gt_index + 1

        labels = None
        if gt_labels is not None:
            labels = gt_inds.new_full((num_boxes,), -1)
            assigned = gt_inds > 0
            labels[assigned] = gt_labels[gt_inds[assigned] - 1]
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)

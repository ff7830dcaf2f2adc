"""mmcv-style NMS: coordinate-offset batched NMS with a single torchvision NMS call, and multi-class NMS."""

from collections.abc import Mapping
from typing import Optional

import torch
from torchvision.ops import nms


def _iou_threshold(nms_cfg: Mapping) -> float:
    unknown = set(nms_cfg) - {"type", "iou_threshold"}
    if nms_cfg.get("type", "nms") != "nms" or unknown or "iou_threshold" not in nms_cfg:
        raise ValueError(f"nms config {dict(nms_cfg)!r}: expected {{'type': 'nms', 'iou_threshold': float}}")
    return float(nms_cfg["iou_threshold"])


# Below this many boxes one NMS call is always the cheapest way on CPU.
_CPU_SPLIT_MIN_BOXES = 1000
# On CPU, NMS costs about (boxes)^2 per call and a call about as much as 50000 box pairs: run group by group when
# boxes^2 > _CPU_SPLIT_PAIRS_PER_GROUP * groups.
_CPU_SPLIT_PAIRS_PER_GROUP = 50_000


def _nms_by_group(
    boxes_for_nms: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Same kept indices, in the same order, as one NMS call on the offset boxes.

    Offset groups never overlap, so each group's NMS (on the same offset coordinates) keeps exactly what the single
    call keeps; the union is put back in the single call's order: score descending, equal scores by index.
    """
    kept = []
    for group in torch.unique(idxs):  # a loop over classes or levels, never over boxes
        members = torch.nonzero(idxs == group, as_tuple=False).flatten()
        kept.append(members[nms(boxes_for_nms[members], scores[members], iou_threshold)])
    keep = torch.cat(kept).sort().values
    return keep[scores[keep].sort(descending=True, stable=True).indices]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, nms_cfg: Mapping, class_agnostic: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """NMS run independently per group id `idxs`, with mmcv's semantics.

    Every box is shifted by `idx * (max coordinate of all boxes + 1)` so groups cannot overlap, and NMS runs on the
    shifted boxes: one call (large CPU inputs: one call per group on the same shifted boxes, which keeps the same
    boxes in the same order, faster). torchvision's batched_nms differs: it may run per class on un-shifted boxes.
    Returns `dets (k, 5)` = un-shifted box + score and the kept indices, both sorted by descending score.
    """
    iou_threshold = _iou_threshold(nms_cfg)
    if boxes.numel() == 0:
        return boxes.new_zeros((0, 5)), idxs.new_zeros((0,), dtype=torch.long)
    if class_agnostic:
        keep = nms(boxes, scores, iou_threshold)
    else:
        offsets = idxs.to(boxes) * (boxes.max() + 1)
        boxes_for_nms = boxes + offsets[:, None]
        num_boxes = boxes.size(0)
        split = (
            boxes.device.type == "cpu"
            and num_boxes > _CPU_SPLIT_MIN_BOXES
            and num_boxes * num_boxes > _CPU_SPLIT_PAIRS_PER_GROUP * torch.unique(idxs).numel()
        )
        if split:
            keep = _nms_by_group(boxes_for_nms, scores, idxs, iou_threshold)
        else:
            keep = nms(boxes_for_nms, scores, iou_threshold)
    return torch.cat([boxes[keep], scores[keep, None]], dim=-1), keep


def multiclass_nms(
    multi_bboxes: torch.Tensor,
    multi_scores: torch.Tensor,
    score_thr: float,
    nms_cfg: Mapping,
    max_num: int = -1,
    score_factors: Optional[torch.Tensor] = None,
    return_inds: bool = False,
):
    """Per-class NMS over `(N, K + 1)` softmax scores whose last column is the background.

    `multi_bboxes` is `(N, 4)` (shared) or `(N, 4K)` (class-specific). Candidates are the (box, class) pairs, flattened
    box-major, with score strictly above `score_thr`. Returns `dets (k, 5)`, `labels (k,)` (and the kept flat indices
    when `return_inds`).
    """
    num_boxes = multi_scores.size(0)
    num_classes = multi_scores.size(1) - 1
    if multi_bboxes.size(1) == 4:
        bboxes = multi_bboxes[:, None, :].expand(num_boxes, num_classes, 4)
    elif multi_bboxes.size(1) == 4 * num_classes:
        bboxes = multi_bboxes.view(num_boxes, num_classes, 4)
    else:
        raise ValueError(
            f"multiclass_nms: boxes {tuple(multi_bboxes.shape)} do not fit {num_classes} classes "
            "(expected (N, 4) or (N, 4K))"
        )
    scores = multi_scores[:, :-1]
    if score_factors is not None:
        scores = scores * score_factors[:, None]
    labels = torch.arange(num_classes, device=scores.device)[None, :].expand_as(scores)

    flat_scores = scores.reshape(-1)
    inds = torch.nonzero(flat_scores > score_thr, as_tuple=False).flatten()
    bboxes = bboxes.reshape(-1, 4)[inds]
    flat_scores = flat_scores[inds]
    labels = labels.reshape(-1)[inds]

    dets, keep = batched_nms(bboxes, flat_scores, labels, nms_cfg)
    if max_num > 0:
        dets, keep = dets[:max_num], keep[:max_num]
    if return_inds:
        return dets, labels[keep], inds[keep]
    return dets, labels[keep]

"""The generic per-image test path of the sigmoid dense heads (FCOS, ATSS; GFL with its own decode and no factor).

mmdetection 2.28's order, per image and per level: sigmoid of the class logits; keep the (location, class) elements
with probability strictly above `score_thr`; sort the survivors descending and keep the first `nms_pre`; decode the
kept pairs' regression against their priors (clipped to img_shape). After all levels (finest first): divide the boxes
by `scale_factor` when rescaling; final score = class probability times the sigmoid of the score factor (centerness),
a plain product; batched NMS with the class as group id; the first `max_per_img` detections.

Three layers, each usable alone:
- `filter_scores_and_topk`: steps 3-4 on one level's `(N, C)` probabilities;
- `dense_nms`: the score factor, batched NMS and `max_per_img` on the candidates of all levels;
- `dense_detections_single`: the whole path for one image from the head's raw per-level outputs, decoding through a
  callback.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Optional

import torch

from mmdet.core import batched_nms, sorted_topk
from mmdet.core.utils import require

# decode(level, priors (k, P), bbox_preds (k, R), max_shape (h, w, ...)) -> boxes (k, 4), clipped to max_shape.
DecodeFn = Callable[[int, torch.Tensor, torch.Tensor, Sequence[int]], torch.Tensor]


def filter_scores_and_topk(
    scores: torch.Tensor, score_thr: float, topk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the (location, class) elements above `score_thr`, then the `topk` best.

    Args:
        scores: `(N, C)` class probabilities of one level, locations in prior order.
        score_thr: strict threshold (`score > score_thr`).
        topk: at most this many pairs are kept (`<= 0`: all survivors).

    Returns:
        `scores (k,)` descending, `labels (k,)` class indices and `location_idxs (k,)` row indices into `scores`.
        Equal scores keep their (location, class) row-major order (a stable sort), as the project's other heads do.
    """
    if scores.dim() != 2:
        raise ValueError(f"filter_scores_and_topk: scores must be (N, C), got {tuple(scores.shape)}")
    valid = scores > score_thr
    location_idxs, labels = torch.nonzero(valid, as_tuple=True)  # row-major: location, then class
    kept = scores[location_idxs, labels]
    kept, order = sorted_topk(kept, topk if topk > 0 else kept.numel())
    return kept, labels[order], location_idxs[order]


def dense_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    score_factors: Optional[torch.Tensor],
    nms_cfg: Mapping,
    max_per_img: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final scores, class-wise NMS and the per-image cap.

    Args:
        boxes: `(M, 4)` candidate boxes of all levels (in the coordinates the result should have).
        scores: `(M,)` class probabilities of the candidates.
        labels: `(M,)` class indices (the NMS group ids).
        score_factors: `(M,)` probabilities (e.g. sigmoid centerness) multiplied into the scores, or None.
        nms_cfg: `{'type': 'nms', 'iou_threshold': float}`.
        max_per_img: keep at most this many detections (`<= 0`: all).

    Returns:
        `det_bboxes (k, 5)` = `[x1, y1, x2, y2, score]` sorted by descending score and `det_labels (k,)`.
    """
    if score_factors is not None:
        scores = scores * score_factors
    if boxes.numel() == 0:
        return boxes.new_zeros((0, 5)), labels.new_zeros((0,), dtype=torch.long)
    dets, keep = batched_nms(boxes, scores, labels, nms_cfg)
    if max_per_img > 0:
        dets, keep = dets[:max_per_img], keep[:max_per_img]
    return dets, labels[keep]


def dense_detections_single(
    cls_scores: Sequence[torch.Tensor],
    bbox_preds: Sequence[torch.Tensor],
    score_factors: Optional[Sequence[torch.Tensor]],
    priors: Sequence[torch.Tensor],
    decode: DecodeFn,
    img_meta: Mapping,
    cfg: Mapping,
    rescale: bool = False,
    where: str = "dense head test_cfg",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detections of one image from a dense head's raw outputs.

    Args:
        cls_scores: per level `(C, H, W)` class logits of this image (one prior per location).
        bbox_preds: per level `(R, H, W)` regression outputs (R = 4 for distances or deltas, 4 * (reg_max + 1) for GFL).
        score_factors: per level `(1, H, W)` score-factor logits (centerness), or None (final score = probability).
        priors: per level `(H * W, P)` priors in location order `y * W + x` (points P = 2, anchors P = 4).
        decode: `decode(level, priors (k, P), bbox_preds (k, R), img_shape) -> (k, 4)` boxes in network-input
            coordinates, clipped to img_shape.
        img_meta: needs `img_shape` and, when rescaling, `scale_factor` (4 values).
        cfg: test_cfg with `score_thr`, `nms`, `max_per_img` and optionally `nms_pre` (default -1: no cap).
        rescale: divide the boxes by `scale_factor` (original-image coordinates).
        where: names the config in error messages.

    Returns:
        `det_bboxes (k, 5)` and `det_labels (k,)`, as `dense_nms`.
    """
    nms_pre = cfg.get("nms_pre", -1)
    score_thr = require(cfg, "score_thr", where)
    nms_cfg = require(cfg, "nms", where)
    max_per_img = require(cfg, "max_per_img", where)
    if score_factors is None:
        score_factors = [None] * len(cls_scores)
    if not len(cls_scores) == len(bbox_preds) == len(score_factors) == len(priors):
        raise ValueError(
            f"dense_detections_single: {len(cls_scores)} score, {len(bbox_preds)} regression, "
            f"{len(score_factors)} score-factor and {len(priors)} prior levels"
        )
    img_shape = img_meta["img_shape"]
    mlvl_boxes, mlvl_scores, mlvl_labels, mlvl_factors = [], [], [], []
    for level, (cls_score, bbox_pred, factor, level_priors) in enumerate(
        zip(cls_scores, bbox_preds, score_factors, priors)
    ):
        num_classes = cls_score.size(0)
        # (C, H, W) -> (H * W, C), rows in prior order
        probs = cls_score.permute(1, 2, 0).reshape(-1, num_classes).sigmoid()
        # (R, H, W) -> (H * W, R)
        preds = bbox_pred.permute(1, 2, 0).reshape(-1, bbox_pred.size(0))
        if preds.size(0) != probs.size(0) or level_priors.size(0) != probs.size(0):
            raise ValueError(
                f"dense_detections_single: level {level} has {probs.size(0)} score locations, {preds.size(0)} "
                f"regression locations and {level_priors.size(0)} priors"
            )
        scores, labels, location_idxs = filter_scores_and_topk(probs, score_thr, nms_pre)
        mlvl_boxes.append(decode(level, level_priors[location_idxs], preds[location_idxs], img_shape))
        mlvl_scores.append(scores)
        mlvl_labels.append(labels)
        if factor is not None:
            mlvl_factors.append(factor.reshape(-1)[location_idxs].sigmoid())  # (1, H, W) -> (H * W,)
    boxes = torch.cat(mlvl_boxes)
    if rescale:
        boxes = boxes / boxes.new_tensor(img_meta["scale_factor"])
    factors = torch.cat(mlvl_factors) if mlvl_factors else None
    return dense_nms(boxes, torch.cat(mlvl_scores), torch.cat(mlvl_labels), factors, nms_cfg, max_per_img)

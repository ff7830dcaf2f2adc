"""GFL head (Li et al., 2020): joint class-quality scores and box sides regressed as discrete distributions."""

from collections.abc import Mapping, Sequence
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet.core import bbox_overlaps

from ..builder import MODELS, build_loss
from ..utils import Scale
from .atss_head import ATSS_ANCHORS, GIOU_LOSS, GN_32, ATSSStyleHead, anchor_centres, mean_over_ranks

_GFL_CODER = dict(type="DistancePointBBoxCoder")
_GFL_LOSS_CLS = dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0)
_GFL_LOSS_DFL = dict(type="DistributionFocalLoss", loss_weight=0.25)


class Integral(nn.Module):
    """Expected value of each side's distribution: softmax over `reg_max + 1` bins, then `sum_i p_i * i`.

    The bin values `0, 1, ..., reg_max` are the persistent float32 buffer `project` (state-dict key
    `integral.project`, shape `[reg_max + 1]`), as in mmdetection's checkpoints.
    """

    def __init__(self, reg_max: int = 16):
        super().__init__()
        if reg_max < 1:
            raise ValueError(f"Integral: reg_max must be >= 1, got {reg_max}")
        self.reg_max = reg_max
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Distances in bin units.

        Args:
            x: `(..., 4 * (reg_max + 1))` bin logits, four consecutive groups of `reg_max + 1` for the sides
                left, top, right, bottom.

        Returns:
            `(..., 4)` expected bins in `[0, reg_max]`.
        """
        bins = self.reg_max + 1
        if x.size(-1) != 4 * bins:
            raise ValueError(f"Integral: the last dimension must be 4 * {bins}, got {tuple(x.shape)}")
        probs = F.softmax(x.reshape(*x.shape[:-1], 4, bins), dim=-1)  # (..., 4 * bins) -> (..., 4, bins)
        return F.linear(probs, self.project.type_as(probs))  # (..., 4)


@MODELS.register_module()
class GFLHead(ATSSStyleHead):
    """Layers `cls_convs.i`, `reg_convs.i` (GN), `gfl_cls` (K channels), `gfl_reg` (`4 * (reg_max + 1)` bin logits),
    `scales.l` (multiplying the bin logits), and `integral`.

    Defaults are the values of mmdetection 2.28's gfl_r50_fpn_1x_coco (the coder is DistancePointBBoxCoder).
    """

    cls_conv_name = "gfl_cls"

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        stacked_convs: int = 4,
        feat_channels: int = 256,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = GN_32,
        anchor_generator: dict = ATSS_ANCHORS,
        bbox_coder: dict = _GFL_CODER,
        loss_cls: dict = _GFL_LOSS_CLS,
        loss_bbox: dict = GIOU_LOSS,
        loss_dfl: dict = _GFL_LOSS_DFL,
        reg_max: int = 16,
        train_cfg: Optional[Mapping] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__(
            num_classes,
            in_channels,
            stacked_convs,
            feat_channels,
            conv_cfg,
            norm_cfg,
            anchor_generator,
            bbox_coder,
            loss_cls,
            loss_bbox,
            train_cfg,
            test_cfg,
            init_cfg,
        )
        if any(w != h for w, h in self.prior_generator.strides):
            raise ValueError(f"GFLHead: square strides are required, got {self.prior_generator.strides}")
        self.reg_max = reg_max
        self.gfl_cls = nn.Conv2d(feat_channels, self.cls_out_channels, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat_channels, 4 * (reg_max + 1), 3, padding=1)
        self._build_scales()
        self.integral = Integral(reg_max)
        self.loss_dfl = build_loss(loss_dfl)
        self.init_weights()

    def forward_single(self, x: torch.Tensor, scale: Scale) -> tuple[torch.Tensor, torch.Tensor]:
        """One level.

        Args:
            x: `(B, in_channels, H, W)`.
            scale: the level's Scale.

        Returns:
            `cls_score (B, K, H, W)` logits of the joint class-quality score and `bbox_pred (B, 4 * (reg_max + 1),
            H, W)` bin logits (times the scale, before any softmax).
        """
        cls_feat, reg_feat = self.towers(x)
        return self.gfl_cls(cls_feat), scale(self.gfl_reg(reg_feat)).float()

    # ----------------------------------------------------------------------------------------------- losses
    def loss_single(
        self,
        anchors: torch.Tensor,
        cls_score: torch.Tensor,
        bbox_pred: torch.Tensor,
        labels: torch.Tensor,
        label_weights: torch.Tensor,
        bbox_targets: torch.Tensor,
        stride: float,
        num_total_samples: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Losses of one level and the sum of its quality weights (the box losses are not yet normalised).

        Positives are handled in stride units: anchor centres and gt boxes are divided by the stride, the
        predicted distances (expected bins) are decoded around the centres; the QFL target is the IoU of the decoded
        prediction (detached) with the gt; GIoU and DFL are weighted by the highest class probability (detached).

        Args:
            anchors: `(B * N, 4)`, image-major.
            cls_score: `(B, K, H, W)`; bbox_pred `(B, 4 * (reg_max + 1), H, W)`.
            labels: `(B, N)` (K = background); label_weights `(B, N)`; bbox_targets `(B, N, 4)` gt boxes (pixels).
            stride: the level's stride.
            num_total_samples: the QFL's avg_factor.

        Returns:
            `loss_cls`, `loss_bbox`, `loss_dfl` and the sum of the quality weights.
        """
        cls_score = cls_score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)  # (B * H * W, K)
        bins = self.reg_max + 1
        bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4 * bins)  # (B * H * W, 4 * bins)
        labels = labels.reshape(-1)
        label_weights = label_weights.reshape(-1)
        bbox_targets = bbox_targets.reshape(-1, 4)

        pos = torch.nonzero((labels >= 0) & (labels < self.num_classes), as_tuple=False).squeeze(1)
        score = label_weights.new_zeros(labels.shape)
        if pos.numel() > 0:
            pos_pred = bbox_pred[pos]
            centres = anchor_centres(anchors[pos]) / stride
            weight_targets = cls_score.detach().sigmoid().max(dim=1).values[pos]
            decoded = self.bbox_coder.decode(centres, self.integral(pos_pred))  # no clipping in training
            targets = bbox_targets[pos] / stride
            score[pos] = bbox_overlaps(decoded.detach(), targets, is_aligned=True)
            pred_corners = pos_pred.reshape(-1, bins)  # (P, 4 * bins) -> (4P, bins), sides l, t, r, b per anchor
            target_corners = self.bbox_coder.encode(centres, targets, self.reg_max).reshape(-1)  # (P, 4) -> (4P,)
            loss_bbox = self.loss_bbox(decoded, targets, weight=weight_targets, avg_factor=1.0)
            loss_dfl = self.loss_dfl(
                pred_corners, target_corners, weight=weight_targets[:, None].expand(-1, 4).reshape(-1), avg_factor=4.0
            )
            weight_sum = weight_targets.sum()
        else:
            loss_bbox = bbox_pred.sum() * 0
            loss_dfl = bbox_pred.sum() * 0
            weight_sum = bbox_pred.new_zeros(())
        loss_cls = self.loss_cls(cls_score, (labels, score), weight=label_weights, avg_factor=num_total_samples)
        return loss_cls, loss_bbox, loss_dfl, weight_sum

    def loss(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        gt_bboxes: list[torch.Tensor],
        gt_labels: Optional[list[torch.Tensor]],
        img_metas: list[dict],
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
    ) -> dict[str, list[torch.Tensor]]:
        """Per-level lists `loss_cls`, `loss_bbox` and `loss_dfl`; the box losses are divided by the sum of the
        quality weights over levels, images and ranks (at least 1).

        Args:
            cls_scores, bbox_preds: the head's raw per-level outputs.
            gt_bboxes: per image `(G_i, 4)`; gt_labels per image `(G_i,)`; img_metas per image meta.
            gt_bboxes_ignore: per image ignore boxes, or None.

        Returns:
            The loss dict.
        """
        anchors, labels, label_weights, bbox_targets, num_total_samples = self._batch_targets(
            cls_scores, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore
        )
        strides = [w for w, _ in self.prior_generator.strides]
        per_level = [
            self.loss_single(*level, num_total_samples)
            for level in zip(anchors, cls_scores, bbox_preds, labels, label_weights, bbox_targets, strides)
        ]
        losses_cls, losses_bbox, losses_dfl, weight_sums = (list(x) for x in zip(*per_level))
        avg_factor = max(mean_over_ranks(sum(weight_sums)), 1.0)
        return dict(
            loss_cls=losses_cls,
            loss_bbox=[loss / avg_factor for loss in losses_bbox],
            loss_dfl=[loss / avg_factor for loss in losses_dfl],
        )

    # ----------------------------------------------------------------------------------------------- inference
    def get_bboxes(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        img_metas: Optional[list[dict]] = None,
        cfg: Optional[Mapping] = None,
        rescale: bool = False,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Detections per image: threshold and top-k on the class probabilities per level, distances = expected bin
        times the stride around the anchor centre (clipped to img_shape), score = probability (no factor), batched
        NMS, `max_per_img`.

        Args:
            cls_scores: per level `(B, K, H, W)` logits.
            bbox_preds: per level `(B, 4 * (reg_max + 1), H, W)` bin logits.
            img_metas: per image meta with `img_shape` and `scale_factor`.
            cfg: test_cfg (default: the head's).
            rescale: return original-image coordinates.

        Returns:
            Per image `det_bboxes (k, 5)` and `det_labels (k,)`.
        """
        return self._dense_detections(cls_scores, bbox_preds, None, img_metas, cfg, rescale, self._decode_bins)

    def _decode_bins(
        self, level: int, anchors: torch.Tensor, bin_logits: torch.Tensor, img_shape: Sequence[int]
    ) -> torch.Tensor:
        """`(k, 4)` boxes from `(k, 4)` anchors and `(k, 4 * (reg_max + 1))` bin logits of one level."""
        distances = self.integral(bin_logits) * self.prior_generator.strides[level][0]
        return self.bbox_coder.decode(anchor_centres(anchors), distances, max_shape=img_shape)

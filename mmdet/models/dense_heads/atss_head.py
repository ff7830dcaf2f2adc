"""ATSS head (Zhang et al., 2020), and the parts it shares with GFLHead: GN towers with a Scale per level, training
targets from ATSSAssigner on one anchor per location, and the generic dense test path."""

import math
from collections.abc import Mapping, Sequence
from typing import Optional

import torch
import torch.nn as nn

from mmdet.core import PseudoSampler
from mmdet.utils.dist_utils import all_reduce_mean_

from ..builder import MODELS, build_loss
from ..utils import ConvModule, Scale
from .anchor_head import AnchorHead, images_to_levels, unmap
from .dense_test import DecodeFn, dense_detections_single

_PRIOR_PROB = 0.01
# The anchors, coder and losses of mmdetection 2.28's atss_r50_fpn_1x_coco / gfl_r50_fpn_1x_coco (one square anchor
# of side 8 * stride per location, centred on `stride * index`).
ATSS_ANCHORS = dict(
    type="AnchorGenerator", ratios=[1.0], octave_base_scale=8, scales_per_octave=1, strides=[8, 16, 32, 64, 128]
)
_ATSS_CODER = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[0.1, 0.1, 0.2, 0.2])
_ATSS_LOSS_CLS = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
GIOU_LOSS = dict(type="GIoULoss", loss_weight=2.0)
_ATSS_LOSS_CENTERNESS = dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)
GN_32 = dict(type="GN", num_groups=32, requires_grad=True)


def mean_over_ranks(value: torch.Tensor) -> float:
    """The value (a scalar tensor, detached) averaged over the ranks of the process group, as a float."""
    value = value.detach().float().clone()
    all_reduce_mean_([value])
    return float(value)


def anchor_centres(anchors: torch.Tensor) -> torch.Tensor:
    """`(N, 2)` centres `((x1 + x2) / 2, (y1 + y2) / 2)` of `(N, 4)` anchors."""
    return torch.stack([(anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2], dim=-1)


class ATSSStyleHead(AnchorHead):
    """Base of ATSSHead and GFLHead (not built from configs).

    Layers: `cls_convs.i` and `reg_convs.i` (3x3 conv + norm, GN by default, + ReLU); subclasses add their
    predictors (the classification conv named by `cls_conv_name`), then call `_build_scales()` (`scales.l`, one
    Scale per level) and `init_weights()`.
    Training: ATSSAssigner on the valid anchors of each image (per-level counts), PseudoSampler, decoded-box targets
    (the gt boxes themselves). Sigmoid classification and one anchor per location are required.
    """

    cls_conv_name = ""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        stacked_convs: int,
        feat_channels: int,
        conv_cfg: Optional[dict],
        norm_cfg: Optional[dict],
        anchor_generator: dict,
        bbox_coder: dict,
        loss_cls: dict,
        loss_bbox: dict,
        train_cfg: Optional[Mapping],
        test_cfg: Optional[Mapping],
        init_cfg: Optional[dict],
    ):
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            feat_channels=feat_channels,
            anchor_generator=anchor_generator,
            bbox_coder=bbox_coder,
            loss_cls=loss_cls,
            loss_bbox=loss_bbox,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            init_cfg=init_cfg,
        )
        name = type(self).__name__
        if not self.use_sigmoid_cls:
            raise ValueError(f"{name}: loss_cls must use sigmoid classification (use_sigmoid=True)")
        if any(n != 1 for n in self.prior_generator.num_base_priors):
            raise ValueError(
                f"{name}: one anchor per location is required, the anchor generator gives "
                f"{self.prior_generator.num_base_priors}"
            )
        # The gt boxes are the regression targets; every valid anchor is used (no sampling).
        self.reg_decoded_bbox = True
        self.sampling = False
        if train_cfg is not None:
            self.sampler = PseudoSampler()
        self.stacked_convs = stacked_convs
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(stacked_convs):
            channels = in_channels if i == 0 else feat_channels
            for tower in (self.cls_convs, self.reg_convs):
                tower.append(
                    ConvModule(channels, feat_channels, 3, stride=1, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
                )

    def _build_scales(self) -> None:
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(self.prior_generator.num_levels))

    def init_weights(self) -> None:
        """Normal(0, 0.01) on every conv of the head, bias 0; the classification conv's bias -ln((1 - 0.01) / 0.01).

        Norm layers keep weight 1, bias 0 and the scales 1.0 (mmdetection's init_cfg of these heads).
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        cls_conv = getattr(self, self.cls_conv_name)
        nn.init.constant_(cls_conv.bias, -math.log((1 - _PRIOR_PROB) / _PRIOR_PROB))

    # ----------------------------------------------------------------------------------------------- forward
    def towers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classification and regression tower outputs, each `(B, feat_channels, H, W)`."""
        cls_feat = reg_feat = x
        for cls_conv in self.cls_convs:
            cls_feat = cls_conv(cls_feat)
        for reg_conv in self.reg_convs:
            reg_feat = reg_conv(reg_feat)
        return cls_feat, reg_feat

    def forward_single(self, x: torch.Tensor, scale: Scale) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], ...]:
        """Raw per-level outputs, one list per output kind (level `l` uses `scales[l]`).

        Args:
            feats: per level `(B, in_channels, H_l, W_l)`, as many levels as the anchor generator has strides.

        Returns:
            A tuple of lists of per-level tensors (see the subclass's `forward_single`).
        """
        if len(feats) != len(self.scales):
            raise ValueError(f"{type(self).__name__}: got {len(feats)} feature levels for {len(self.scales)} scales")
        per_level = [self.forward_single(feat, scale) for feat, scale in zip(feats, self.scales)]
        return tuple(list(outputs) for outputs in zip(*per_level))

    def forward_train(
        self,
        x: Sequence[torch.Tensor],
        img_metas: list[dict],
        gt_bboxes: list[torch.Tensor],
        gt_labels: Optional[list[torch.Tensor]] = None,
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
        proposal_cfg: Optional[Mapping] = None,
        **kwargs,
    ):
        """Losses of a batch.

        Args:
            x: per level `(B, in_channels, H_l, W_l)` features.
            img_metas: per image meta (`img_shape`, `pad_shape`, ...).
            gt_bboxes: per image `(G_i, 4)` boxes; gt_labels per image `(G_i,)`; gt_bboxes_ignore per image or None.
            proposal_cfg: when given, the detections of `get_bboxes(cfg=proposal_cfg)` are returned too.
            **kwargs: other batch keys a detector forwards; not used.

        Returns:
            The loss dict of `loss`, or `(losses, detections)` with `proposal_cfg`.
        """
        outs = self(x)
        losses = self.loss(*outs, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore=gt_bboxes_ignore)
        if proposal_cfg is None:
            return losses
        return losses, self.get_bboxes(*outs, img_metas=img_metas, cfg=proposal_cfg)

    def simple_test(
        self, feats: list[torch.Tensor], img_metas: list[dict], rescale: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Detections of a batch.

        Args:
            feats: per level `(B, in_channels, H_l, W_l)` features.
            img_metas: per image meta with `img_shape` and `scale_factor`.
            rescale: return original-image coordinates.

        Returns:
            Per image `(det_bboxes (k, 5), det_labels (k,))`.
        """
        return self.get_bboxes(*self(feats), img_metas=img_metas, rescale=rescale)

    def _dense_detections(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        score_factors: Optional[list[torch.Tensor]],
        img_metas: Optional[list[dict]],
        cfg: Optional[Mapping],
        rescale: bool,
        decode: DecodeFn,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`dense_detections_single` image by image on the batch's raw outputs, with the head's anchors."""
        if img_metas is None:
            raise ValueError(f"{type(self).__name__}.get_bboxes needs img_metas")
        cfg = self.test_cfg if cfg is None else cfg
        anchors = self.level_anchors(cls_scores)
        return [
            dense_detections_single(
                [s[i].detach() for s in cls_scores],
                [b[i].detach() for b in bbox_preds],
                None if score_factors is None else [f[i].detach() for f in score_factors],
                anchors,
                decode,
                img_metas[i],
                cfg,
                rescale,
                where=f"{type(self).__name__} test_cfg",
            )
            for i in range(len(img_metas))
        ]

    # ----------------------------------------------------------------------------------------------- targets
    def _get_targets_single(
        self,
        anchors: torch.Tensor,
        valid_flags: torch.Tensor,
        num_level_anchors: Sequence[int],
        gt_bboxes: torch.Tensor,
        gt_bboxes_ignore: Optional[torch.Tensor],
        gt_labels: Optional[torch.Tensor],
        img_meta: dict,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Labels `(N,)`, label weights `(N,)`, box targets `(N, 4)` (gt boxes at positives) and the positive count
        of one image's `(N, 4)` anchors (all levels)."""
        num_anchors = anchors.size(0)
        inside = self._inside_flags(anchors, valid_flags, img_meta["img_shape"])
        inside_anchors = anchors[inside]
        num_level_inside = [int(flags.sum()) for flags in inside.split(list(num_level_anchors))]
        assign_result = self.assigner.assign(inside_anchors, num_level_inside, gt_bboxes, gt_bboxes_ignore, gt_labels)
        sampling_result = self.sampler.sample(assign_result, inside_anchors, gt_bboxes)

        num_inside = inside_anchors.size(0)
        labels = inside_anchors.new_full((num_inside,), self.num_classes, dtype=torch.long)
        label_weights = inside_anchors.new_zeros(num_inside)
        bbox_targets = torch.zeros_like(inside_anchors)
        pos_inds, neg_inds = sampling_result.pos_inds, sampling_result.neg_inds
        if pos_inds.numel() > 0:
            bbox_targets[pos_inds] = sampling_result.pos_gt_bboxes
            if gt_labels is None:
                labels[pos_inds] = 0
            else:
                labels[pos_inds] = gt_labels[sampling_result.pos_assigned_gt_inds]
            pos_weight = self.train_cfg.get("pos_weight", -1)
            label_weights[pos_inds] = 1.0 if pos_weight <= 0 else pos_weight
        if neg_inds.numel() > 0:
            label_weights[neg_inds] = 1.0
        return (
            unmap(labels, num_anchors, inside, fill=self.num_classes),
            unmap(label_weights, num_anchors, inside),
            unmap(bbox_targets, num_anchors, inside),
            pos_inds.numel(),
        )

    def get_targets(
        self,
        anchors: torch.Tensor,
        valid_flag_list: list[torch.Tensor],
        num_level_anchors: Sequence[int],
        gt_bboxes_list: list[torch.Tensor],
        img_metas: list[dict],
        gt_bboxes_ignore_list: Optional[list[Optional[torch.Tensor]]] = None,
        gt_labels_list: Optional[list[torch.Tensor]] = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], int]:
        """ATSS training targets of a batch.

        Args:
            anchors: `(N, 4)` anchors of all levels (the same for every image).
            valid_flag_list: per image `(N,)` valid flags (False in batch padding).
            num_level_anchors: anchors per level, summing to N.
            gt_bboxes_list: per image `(G_i, 4)` gt boxes.
            img_metas: per image meta (`img_shape` is used with `allowed_border >= 0`).
            gt_bboxes_ignore_list: per image ignore boxes, or None.
            gt_labels_list: per image `(G_i,)` labels, or None (one foreground class).

        Returns:
            Per level `labels (B, N_l)`, `label_weights (B, N_l)`, `bbox_targets (B, N_l, 4)`, and the number of
            positives summed over images, each image counting at least 1.
        """
        if self.train_cfg is None:
            raise ValueError(f"{type(self).__name__}: training needs a train_cfg")
        num_imgs = len(img_metas)
        if gt_bboxes_ignore_list is None:
            gt_bboxes_ignore_list = [None] * num_imgs
        if gt_labels_list is None:
            gt_labels_list = [None] * num_imgs
        per_image = [
            self._get_targets_single(
                anchors,
                valid_flag_list[i],
                num_level_anchors,
                gt_bboxes_list[i],
                gt_bboxes_ignore_list[i],
                gt_labels_list[i],
                img_metas[i],
            )
            for i in range(num_imgs)
        ]
        labels, label_weights, bbox_targets, num_pos = zip(*per_image)
        num_total_pos = sum(max(n, 1) for n in num_pos)
        return (
            images_to_levels(list(labels), num_level_anchors),
            images_to_levels(list(label_weights), num_level_anchors),
            images_to_levels(list(bbox_targets), num_level_anchors),
            num_total_pos,
        )

    def _batch_targets(
        self,
        cls_scores: list[torch.Tensor],
        gt_bboxes: list[torch.Tensor],
        gt_labels: Optional[list[torch.Tensor]],
        img_metas: list[dict],
        gt_bboxes_ignore: Optional[list[torch.Tensor]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], float]:
        """Per level anchors `(B * N_l, 4)` (image-major, as the flattened outputs), labels `(B, N_l)`, label
        weights, box targets `(B, N_l, 4)`, and `num_total_samples` (positives averaged over ranks, at least 1)."""
        featmap_sizes = [tuple(score.shape[-2:]) for score in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, img_metas, cls_scores[0].device)
        num_level_anchors = [h * w for h, w in featmap_sizes]
        labels, label_weights, bbox_targets, num_total_pos = self.get_targets(
            anchor_list[0], valid_flag_list, num_level_anchors, gt_bboxes, img_metas, gt_bboxes_ignore, gt_labels
        )
        num_imgs = len(img_metas)
        level_anchors = [
            level.repeat(num_imgs, 1)  # (N_l, 4) -> (B * N_l, 4)
            for level in anchor_list[0].split(num_level_anchors)
        ]
        num_total_samples = max(mean_over_ranks(torch.tensor(float(num_total_pos), device=cls_scores[0].device)), 1.0)
        return level_anchors, labels, label_weights, bbox_targets, num_total_samples


def centerness_target(anchors: torch.Tensor, gt_bboxes: torch.Tensor) -> torch.Tensor:
    """`sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))` from each anchor's centre to its gt's sides.

    Args:
        anchors: `(P, 4)` positive anchors.
        gt_bboxes: `(P, 4)` their gt boxes.

    Returns:
        `(P,)` centerness targets in `[0, 1]`.
    """
    centres = anchor_centres(anchors)
    left = centres[:, 0] - gt_bboxes[:, 0]
    top = centres[:, 1] - gt_bboxes[:, 1]
    right = gt_bboxes[:, 2] - centres[:, 0]
    bottom = gt_bboxes[:, 3] - centres[:, 1]
    horizontal = torch.min(left, right) / torch.max(left, right)
    vertical = torch.min(top, bottom) / torch.max(top, bottom)
    return torch.sqrt(horizontal * vertical)


_ATSSHeadLosses = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@MODELS.register_module()
class ATSSHead(ATSSStyleHead):
    """Layers `cls_convs.i`, `reg_convs.i` (GN), `atss_cls` (K channels), `atss_reg` (4 deltas),
    `atss_centerness` (1, on the regression tower), `scales.l`.

    Defaults are the values of mmdetection 2.28's atss_r50_fpn_1x_coco.
    """

    cls_conv_name = "atss_cls"

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        pred_kernel_size: int = 3,
        stacked_convs: int = 4,
        feat_channels: int = 256,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = GN_32,
        reg_decoded_bbox: bool = True,
        anchor_generator: dict = ATSS_ANCHORS,
        bbox_coder: dict = _ATSS_CODER,
        loss_cls: dict = _ATSS_LOSS_CLS,
        loss_bbox: dict = GIOU_LOSS,
        loss_centerness: dict = _ATSS_LOSS_CENTERNESS,
        train_cfg: Optional[Mapping] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
    ):
        if not reg_decoded_bbox:
            raise ValueError("ATSSHead: only reg_decoded_bbox=True (a box loss on decoded boxes) is supported")
        if pred_kernel_size % 2 != 1:
            raise ValueError(f"ATSSHead: pred_kernel_size must be odd, got {pred_kernel_size}")
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
        self.pred_kernel_size = pred_kernel_size
        padding = pred_kernel_size // 2
        self.atss_cls = nn.Conv2d(feat_channels, self.cls_out_channels, pred_kernel_size, padding=padding)
        self.atss_reg = nn.Conv2d(feat_channels, 4, pred_kernel_size, padding=padding)
        self.atss_centerness = nn.Conv2d(feat_channels, 1, pred_kernel_size, padding=padding)
        self._build_scales()
        self.loss_centerness = build_loss(loss_centerness)
        self.init_weights()

    def forward_single(self, x: torch.Tensor, scale: Scale) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One level.

        Args:
            x: `(B, in_channels, H, W)`.
            scale: the level's Scale.

        Returns:
            `cls_score (B, K, H, W)` logits, `bbox_pred (B, 4, H, W)` deltas (times the scale, no exp),
            `centerness (B, 1, H, W)` logits.
        """
        cls_feat, reg_feat = self.towers(x)
        cls_score = self.atss_cls(cls_feat)
        bbox_pred = scale(self.atss_reg(reg_feat)).float()
        centerness = self.atss_centerness(reg_feat)
        return cls_score, bbox_pred, centerness

    # ----------------------------------------------------------------------------------------------- losses
    def loss_single(
        self,
        anchors: torch.Tensor,
        cls_score: torch.Tensor,
        bbox_pred: torch.Tensor,
        centerness: torch.Tensor,
        labels: torch.Tensor,
        label_weights: torch.Tensor,
        bbox_targets: torch.Tensor,
        num_total_samples: float,
    ) -> _ATSSHeadLosses:
        """Losses of one level and the sum of its centerness targets (the box loss is not yet normalised).

        Args:
            anchors: `(B * N, 4)`, image-major.
            cls_score: `(B, K, H, W)`; bbox_pred `(B, 4, H, W)`; centerness `(B, 1, H, W)`.
            labels: `(B, N)` (K = background); label_weights `(B, N)`; bbox_targets `(B, N, 4)` gt boxes.
            num_total_samples: the classification and centerness losses' avg_factor.

        Returns:
            `loss_cls`, `loss_bbox` (centerness-weighted GIoU sum), `loss_centerness`, sum of centerness targets.
        """
        cls_score = cls_score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)  # (B * H * W, K)
        bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4)  # (B * H * W, 4)
        centerness = centerness.permute(0, 2, 3, 1).reshape(-1)  # (B * H * W,)
        labels = labels.reshape(-1)
        label_weights = label_weights.reshape(-1)
        bbox_targets = bbox_targets.reshape(-1, 4)
        loss_cls = self.loss_cls(cls_score, labels, label_weights, avg_factor=num_total_samples)

        pos = torch.nonzero((labels >= 0) & (labels < self.num_classes), as_tuple=False).squeeze(1)
        if pos.numel() == 0:
            zero = bbox_pred.sum() * 0
            return loss_cls, zero, centerness.sum() * 0, bbox_targets.new_zeros(())
        pos_anchors, pos_targets = anchors[pos], bbox_targets[pos]
        targets = centerness_target(pos_anchors, pos_targets)
        decoded = self.bbox_coder.decode(pos_anchors, bbox_pred[pos])  # no clipping in training
        loss_bbox = self.loss_bbox(decoded, pos_targets, weight=targets, avg_factor=1.0)
        loss_centerness = self.loss_centerness(centerness[pos], targets, avg_factor=num_total_samples)
        return loss_cls, loss_bbox, loss_centerness, targets.sum()

    def loss(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        centernesses: list[torch.Tensor],
        gt_bboxes: list[torch.Tensor],
        gt_labels: Optional[list[torch.Tensor]],
        img_metas: list[dict],
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
    ) -> dict[str, list[torch.Tensor]]:
        """Per-level lists `loss_cls`, `loss_bbox` (divided by the centerness-target sum over levels, images and
        ranks, at least 1) and `loss_centerness`.

        Args:
            cls_scores, bbox_preds, centernesses: the head's raw per-level outputs.
            gt_bboxes: per image `(G_i, 4)`; gt_labels per image `(G_i,)`; img_metas per image meta.
            gt_bboxes_ignore: per image ignore boxes, or None.

        Returns:
            The loss dict.
        """
        anchors, labels, label_weights, bbox_targets, num_total_samples = self._batch_targets(
            cls_scores, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore
        )
        per_level = [
            self.loss_single(*level, num_total_samples)
            for level in zip(anchors, cls_scores, bbox_preds, centernesses, labels, label_weights, bbox_targets)
        ]
        losses_cls, losses_bbox, losses_centerness, centerness_sums = (list(x) for x in zip(*per_level))
        bbox_avg_factor = max(mean_over_ranks(sum(centerness_sums)), 1.0)
        return dict(
            loss_cls=losses_cls,
            loss_bbox=[loss / bbox_avg_factor for loss in losses_bbox],
            loss_centerness=losses_centerness,
        )

    # ----------------------------------------------------------------------------------------------- inference
    def get_bboxes(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        score_factors: Optional[list[torch.Tensor]] = None,
        img_metas: Optional[list[dict]] = None,
        cfg: Optional[Mapping] = None,
        rescale: bool = False,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Detections per image: threshold and top-k on the class probabilities per level, DeltaXYWH decode
        (clipped to img_shape), score = probability * sigmoid(centerness), batched NMS, `max_per_img`.

        Args:
            cls_scores: per level `(B, K, H, W)` logits.
            bbox_preds: per level `(B, 4, H, W)` deltas.
            score_factors: per level `(B, 1, H, W)` centerness logits (None: no factor).
            img_metas: per image meta with `img_shape` and `scale_factor`.
            cfg: test_cfg (default: the head's).
            rescale: return original-image coordinates.

        Returns:
            Per image `det_bboxes (k, 5)` and `det_labels (k,)`.
        """
        return self._dense_detections(
            cls_scores, bbox_preds, score_factors, img_metas, cfg, rescale, self._decode_deltas
        )

    def _decode_deltas(
        self, level: int, anchors: torch.Tensor, deltas: torch.Tensor, img_shape: Sequence[int]
    ) -> torch.Tensor:
        return self.bbox_coder.decode(anchors, deltas, max_shape=img_shape)

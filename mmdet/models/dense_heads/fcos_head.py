"""FCOS head (Tian et al., 2019) as in mmdetection 2.28: per-location classes, side distances and centerness."""

from collections.abc import Mapping, Sequence
from typing import Optional, Union

import torch
import torch.nn as nn

from mmdet.utils.dist_utils import all_reduce_mean_

from ..builder import MODELS, build_loss
from ..utils import Scale
from .anchor_free_head import _DEFAULT_CODER, _DEFAULT_LOSS_BBOX, _DEFAULT_LOSS_CLS, AnchorFreeHead
from .dense_test import dense_detections_single

INF = 1e8
_DEFAULT_REGRESS_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))
_DEFAULT_LOSS_CENTERNESS = dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)
_DEFAULT_NORM = dict(type="GN", num_groups=32, requires_grad=True)
_LEGACY_PREDICTORS = (("centerness", "conv_centerness"), ("cls", "conv_cls"), ("reg", "conv_reg"))


def rename_legacy_fcos_keys(state_dict: Mapping[str, torch.Tensor], prefix: str = "bbox_head.") -> dict:
    """A copy of `state_dict` with old FCOS predictor names (`fcos_cls`, `fcos_reg`, `fcos_centerness`, i.e. any
    module under `prefix` whose name ends in 'cls', 'reg' or 'centerness') renamed to `conv_cls`, `conv_reg`,
    `conv_centerness`, mmdetection's rule for checkpoints saved without version metadata.

    Args:
        state_dict: keys such as `bbox_head.fcos_cls.weight`.
        prefix: the head's key prefix.

    Returns:
        A new dict, other keys unchanged and in the same order.
    """
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            module, _, rest = key[len(prefix) :].partition(".")
            for ending, new_name in _LEGACY_PREDICTORS:
                if rest and module.endswith(ending):
                    key = f"{prefix}{new_name}.{rest}"
                    break
        renamed[key] = value
    return renamed


@MODELS.register_module()
class FCOSHead(AnchorFreeHead):
    """Layers `cls_convs.i`, `reg_convs.i` (3x3 conv + GN + ReLU), `conv_cls`, `conv_reg`, `conv_centerness` and one
    `scales.l` per level.

    Per level l: `cls = conv_cls(cls_feat)`; `ctr = conv_centerness(cls_feat)` (`reg_feat` with
    `centerness_on_reg`); distances `(left, top, right, bottom) = exp(scales.l * conv_reg(reg_feat))`, or with
    `norm_on_bbox` `relu(scales.l * conv_reg(reg_feat))`, multiplied by the level stride outside training.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        regress_ranges: Sequence[tuple[float, float]] = _DEFAULT_REGRESS_RANGES,
        center_sampling: bool = False,
        center_sample_radius: float = 1.5,
        norm_on_bbox: bool = False,
        centerness_on_reg: bool = False,
        dcn_on_last_conv: bool = False,
        conv_bias: Union[bool, str] = "auto",
        loss_cls: dict = _DEFAULT_LOSS_CLS,
        loss_bbox: dict = _DEFAULT_LOSS_BBOX,
        loss_centerness: dict = _DEFAULT_LOSS_CENTERNESS,
        bbox_coder: dict = _DEFAULT_CODER,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = _DEFAULT_NORM,
        train_cfg: Optional[Mapping] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            feat_channels=feat_channels,
            stacked_convs=stacked_convs,
            strides=strides,
            dcn_on_last_conv=dcn_on_last_conv,
            conv_bias=conv_bias,
            loss_cls=loss_cls,
            loss_bbox=loss_bbox,
            bbox_coder=bbox_coder,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            init_cfg=init_cfg,
        )
        if len(regress_ranges) != len(self.strides):
            raise ValueError(f"FCOSHead: {len(regress_ranges)} regress_ranges for {len(self.strides)} strides")
        self.regress_ranges = [(float(lo), float(hi)) for lo, hi in regress_ranges]
        self.center_sampling = center_sampling
        self.center_sample_radius = center_sample_radius
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        self.loss_centerness = build_loss(loss_centerness)
        self.conv_centerness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self.init_weights()

    # ----------------------------------------------------------------------------------------------- forward
    def forward(
        self, feats: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Raw per-level outputs.

        Args:
            feats: one `(B, in_channels, H_l, W_l)` map per level (as many as `strides`).

        Returns:
            Lists over levels of `cls_scores (B, C, H, W)` logits, `bbox_preds (B, 4, H, W)` distances
            (l, t, r, b) and `centernesses (B, 1, H, W)` logits.
        """
        if len(feats) != len(self.strides):
            raise ValueError(f"FCOSHead: got {len(feats)} feature maps for {len(self.strides)} strides")
        cls_scores, bbox_preds, centernesses = [], [], []
        for feat, scale, stride in zip(feats, self.scales, self.strides):
            cls_score, bbox_pred, centerness = self.forward_single(feat, scale, stride)
            cls_scores.append(cls_score)
            bbox_preds.append(bbox_pred)
            centernesses.append(centerness)
        return cls_scores, bbox_preds, centernesses

    def forward_single(  # type: ignore[override]
        self, x: torch.Tensor, scale: Scale, stride: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One level: `cls_score (B, C, H, W)`, `bbox_pred (B, 4, H, W)` (float32), `centerness (B, 1, H, W)`."""
        cls_score, bbox_pred, cls_feat, reg_feat = super().forward_single(x)
        centerness = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        bbox_pred = scale(bbox_pred).float()
        if self.norm_on_bbox:
            bbox_pred = bbox_pred.clamp(min=0)
            if not self.training:
                bbox_pred = bbox_pred * stride
        else:
            bbox_pred = bbox_pred.exp()
        return cls_score, bbox_pred, centerness

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
        """Losses (and the detections of `get_bboxes(cfg=proposal_cfg)` when it is given).

        Args:
            x: the FPN levels, `(B, in_channels, H_l, W_l)` each.
            img_metas: per image meta dicts.
            gt_bboxes: per image `(G, 4)` boxes in network-input pixels.
            gt_labels: per image `(G,)` labels in `[0, num_classes)`.
            gt_bboxes_ignore: not used by FCOS (accepted for the common signature).

        Returns:
            `dict(loss_cls, loss_bbox, loss_centerness)` of scalar tensors.
        """
        if gt_labels is None:
            raise ValueError("FCOSHead.forward_train: gt_labels are required")
        outs = self(x)
        losses = self.loss(*outs, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore=gt_bboxes_ignore)
        if proposal_cfg is None:
            return losses
        return losses, self.get_bboxes(*outs, img_metas, cfg=proposal_cfg)

    # ----------------------------------------------------------------------------------------------- targets
    def get_targets(
        self, points: list[torch.Tensor], gt_bboxes_list: list[torch.Tensor], gt_labels_list: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-level labels and regression targets of the whole batch.

        Args:
            points: per level `(N_l, 2)` points.
            gt_bboxes_list: per image `(G_i, 4)` boxes.
            gt_labels_list: per image `(G_i,)` labels.

        Returns:
            Per level `labels (B * N_l,)` (`num_classes` for background) and `bbox_targets (B * N_l, 4)` distances
            (l, t, r, b), divided by the level stride with `norm_on_bbox`; rows image-major, then location.
        """
        num_levels = len(points)
        if num_levels != len(self.regress_ranges):
            raise ValueError(f"FCOSHead: {num_levels} point levels for {len(self.regress_ranges)} regress ranges")
        num_points = [p.size(0) for p in points]
        # per level (N_l, 2) -> all levels (N, 2), each point with its level's range
        regress_ranges = torch.cat(
            [
                p.new_tensor(self.regress_ranges[i])[None, :].expand(n, 2)
                for i, (p, n) in enumerate(zip(points, num_points))
            ]
        )
        concat_points = torch.cat(points)
        per_image = [
            self._get_targets_single(gt_bboxes, gt_labels, concat_points, regress_ranges, num_points)
            for gt_bboxes, gt_labels in zip(gt_bboxes_list, gt_labels_list)
        ]
        labels_list = [labels.split(num_points) for labels, _ in per_image]
        targets_list = [targets.split(num_points) for _, targets in per_image]
        level_labels, level_targets = [], []
        for level in range(num_levels):
            level_labels.append(torch.cat([labels[level] for labels in labels_list]))
            targets = torch.cat([targets[level] for targets in targets_list])
            if self.norm_on_bbox:
                targets = targets / self.strides[level]
            level_targets.append(targets)
        return level_labels, level_targets

    def _get_targets_single(
        self,
        gt_bboxes: torch.Tensor,
        gt_labels: torch.Tensor,
        points: torch.Tensor,
        regress_ranges: torch.Tensor,
        num_points_per_level: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels `(N,)` and distances `(N, 4)` of one image's `(N, 2)` points (all levels concatenated).

        A point is a candidate for a gt when it lies strictly inside the gt (inside its centre region with
        `center_sampling`) and the largest of its four distances is within its level's range (both ends inclusive);
        among candidates the smallest-area gt wins (first on ties). Points without candidates are background.
        """
        num_points, num_gts = points.size(0), gt_bboxes.size(0)
        if num_gts == 0:
            return gt_labels.new_full((num_points,), self.num_classes), gt_bboxes.new_zeros((num_points, 4))
        gt_bboxes = gt_bboxes.to(points.dtype)
        areas = (gt_bboxes[:, 2] - gt_bboxes[:, 0]) * (gt_bboxes[:, 3] - gt_bboxes[:, 1])
        areas = areas[None, :].repeat(num_points, 1)  # (G,) -> (N, G)
        ranges = regress_ranges[:, None, :].expand(num_points, num_gts, 2)
        boxes = gt_bboxes[None, :, :].expand(num_points, num_gts, 4)
        xs = points[:, 0, None].expand(num_points, num_gts)
        ys = points[:, 1, None].expand(num_points, num_gts)
        # (N, G, 4): distances (l, t, r, b) of every point to every gt's sides
        bbox_targets = torch.stack(
            [xs - boxes[..., 0], ys - boxes[..., 1], boxes[..., 2] - xs, boxes[..., 3] - ys], dim=-1
        )

        if self.center_sampling:
            center_xs = (boxes[..., 0] + boxes[..., 2]) / 2
            center_ys = (boxes[..., 1] + boxes[..., 3]) / 2
            radius = torch.cat(
                [
                    center_xs.new_full((n,), stride * self.center_sample_radius)
                    for n, stride in zip(num_points_per_level, self.strides)
                ]
            )[:, None]  # (N,) -> (N, 1), the half-size of the centre box at each point's level
            # the centre box intersected with the gt box, (N, G) per side
            x1 = torch.max(center_xs - radius, boxes[..., 0])
            y1 = torch.max(center_ys - radius, boxes[..., 1])
            x2 = torch.min(center_xs + radius, boxes[..., 2])
            y2 = torch.min(center_ys + radius, boxes[..., 3])
            center_dists = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], dim=-1)
            inside_gt = center_dists.min(dim=-1).values > 0
        else:
            inside_gt = bbox_targets.min(dim=-1).values > 0

        max_distance = bbox_targets.max(dim=-1).values
        inside_range = (max_distance >= ranges[..., 0]) & (max_distance <= ranges[..., 1])

        areas[~inside_gt] = INF
        areas[~inside_range] = INF
        min_area, min_area_inds = areas.min(dim=1)
        labels = gt_labels[min_area_inds]
        labels[min_area == INF] = self.num_classes
        bbox_targets = bbox_targets[torch.arange(num_points, device=points.device), min_area_inds]
        return labels, bbox_targets

    @staticmethod
    def centerness_target(pos_bbox_targets: torch.Tensor) -> torch.Tensor:
        """`sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))` of `(P, 4)` distances, `(P,)`."""
        if pos_bbox_targets.size(0) == 0:
            return pos_bbox_targets.new_zeros((0,))
        left_right = pos_bbox_targets[:, [0, 2]]
        top_bottom = pos_bbox_targets[:, [1, 3]]
        ratio = (left_right.min(dim=-1).values / left_right.max(dim=-1).values) * (
            top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values
        )
        return torch.sqrt(ratio)

    # ----------------------------------------------------------------------------------------------- losses
    def loss(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        centernesses: list[torch.Tensor],
        gt_bboxes: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        img_metas: list[dict],
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
    ) -> dict[str, torch.Tensor]:
        """Focal loss over all points and classes, IoU-family loss and centerness BCE over the positives.

        Args:
            cls_scores, bbox_preds, centernesses: the outputs of `forward` (training mode).
            gt_bboxes: per image `(G, 4)`; gt_labels: per image `(G,)`; img_metas: per image meta dicts.
            gt_bboxes_ignore: not used.

        Returns:
            `dict(loss_cls, loss_bbox, loss_centerness)`. `loss_cls` and `loss_centerness` are averaged over the
            number of positives (mean over processes, at least 1); `loss_bbox` is weighted by the centerness targets
            and averaged over their sum (mean over processes, at least 1e-6).
        """
        if not len(cls_scores) == len(bbox_preds) == len(centernesses):
            raise ValueError("FCOSHead.loss: cls_scores, bbox_preds and centernesses must have one entry per level")
        featmap_sizes = [tuple(score.shape[-2:]) for score in cls_scores]
        points = self.level_points(featmap_sizes, bbox_preds[0].dtype, bbox_preds[0].device)
        labels, bbox_targets = self.get_targets(points, gt_bboxes, gt_labels)

        num_imgs = cls_scores[0].size(0)
        # per level (B, C, H, W) -> (B * H * W, C); levels concatenated: level-major, then image, then location
        flatten_cls_scores = torch.cat(
            [score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels) for score in cls_scores]
        )
        flatten_bbox_preds = torch.cat([pred.permute(0, 2, 3, 1).reshape(-1, 4) for pred in bbox_preds])
        flatten_centerness = torch.cat([ctr.permute(0, 2, 3, 1).reshape(-1) for ctr in centernesses])
        flatten_labels = torch.cat(labels)
        flatten_bbox_targets = torch.cat(bbox_targets)
        flatten_points = torch.cat([p.repeat(num_imgs, 1) for p in points])

        pos_inds = torch.nonzero((flatten_labels >= 0) & (flatten_labels < self.num_classes), as_tuple=False).reshape(
            -1
        )
        num_pos = flatten_cls_scores.new_tensor(float(pos_inds.numel()))
        all_reduce_mean_([num_pos])
        num_pos = max(float(num_pos), 1.0)
        loss_cls = self.loss_cls(flatten_cls_scores, flatten_labels, avg_factor=num_pos)

        pos_bbox_preds = flatten_bbox_preds[pos_inds]
        pos_centerness = flatten_centerness[pos_inds]
        if pos_inds.numel() == 0:
            return dict(loss_cls=loss_cls, loss_bbox=pos_bbox_preds.sum(), loss_centerness=pos_centerness.sum())

        pos_bbox_targets = flatten_bbox_targets[pos_inds]
        pos_centerness_targets = self.centerness_target(pos_bbox_targets)
        centerness_denorm = pos_centerness_targets.sum().detach().clone()
        all_reduce_mean_([centerness_denorm])
        centerness_denorm = max(float(centerness_denorm), 1e-6)
        pos_points = flatten_points[pos_inds]
        pos_decoded_preds = self.bbox_coder.decode(pos_points, pos_bbox_preds)
        pos_decoded_targets = self.bbox_coder.decode(pos_points, pos_bbox_targets)
        loss_bbox = self.loss_bbox(
            pos_decoded_preds, pos_decoded_targets, weight=pos_centerness_targets, avg_factor=centerness_denorm
        )
        loss_centerness = self.loss_centerness(pos_centerness, pos_centerness_targets, avg_factor=num_pos)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_centerness=loss_centerness)

    # ----------------------------------------------------------------------------------------------- inference
    def simple_test(
        self, feats: Sequence[torch.Tensor], img_metas: list[dict], rescale: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image `(det_bboxes (k, 5), det_labels (k,))`; original-image coordinates when `rescale`."""
        return self.get_bboxes(*self(feats), img_metas, rescale=rescale)

    def get_bboxes(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        centernesses: Optional[list[torch.Tensor]],
        img_metas: list[dict],
        cfg: Optional[Mapping] = None,
        rescale: bool = False,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Detections from the raw outputs (mmdetection's generic dense path, see `dense_test`).

        Args:
            cls_scores: per level `(B, C, H, W)` logits.
            bbox_preds: per level `(B, 4, H, W)` distances in network-input pixels (the eval-mode output).
            centernesses: per level `(B, 1, H, W)` logits, or None (score = class probability).
            img_metas: per image dicts with `img_shape` and `scale_factor`.
            cfg: test_cfg (default: the head's).
            rescale: return boxes in original-image coordinates.

        Returns:
            Per image `det_bboxes (k, 5)` = `[x1, y1, x2, y2, score]` with score = sigmoid(cls) * sigmoid(ctr), and
            `det_labels (k,)`.
        """
        cfg = self.test_cfg if cfg is None else cfg
        featmap_sizes = [tuple(score.shape[-2:]) for score in cls_scores]
        points = self.level_points(featmap_sizes, cls_scores[0].dtype, cls_scores[0].device)

        def decode(level: int, priors: torch.Tensor, preds: torch.Tensor, max_shape) -> torch.Tensor:
            return self.bbox_coder.decode(priors, preds, max_shape=max_shape)

        results = []
        for i, img_meta in enumerate(img_metas):
            results.append(
                dense_detections_single(
                    [score[i].detach() for score in cls_scores],
                    [pred[i].detach() for pred in bbox_preds],
                    None if centernesses is None else [ctr[i].detach() for ctr in centernesses],
                    points,
                    decode,
                    img_meta,
                    cfg,
                    rescale=rescale,
                    where="FCOSHead test_cfg",
                )
            )
        return results

"""Shared logic of the anchor-based dense heads (RPN, RetinaNet): anchors, training targets and losses."""

from collections.abc import Mapping, Sequence
from typing import Optional

import torch
import torch.nn as nn

from mmdet.core import PseudoSampler, build_assigner, build_bbox_coder, build_prior_generator, build_sampler
from mmdet.core.utils import require

from ..builder import build_loss

# Losses that need no sampling: every assigned anchor counts and the average is over positives only.
_UNSAMPLED_LOSSES = ("FocalLoss",)


def images_to_levels(per_image: list[torch.Tensor], num_per_level: Sequence[int]) -> list[torch.Tensor]:
    """Stack per-image targets `(N_total, ...)` and split them into per-level `(B, N_level, ...)` tensors."""
    return list(torch.stack(per_image, dim=0).split(list(num_per_level), dim=1))


def unmap(data: torch.Tensor, count: int, inds: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """Scatter `data` (rows for the True entries of mask `inds`) back into `count` rows filled with `fill`."""
    out = data.new_full((count,) + tuple(data.shape[1:]), fill)
    out[inds] = data
    return out


class AnchorHead(nn.Module):
    """Base of RPNHead and RetinaHead: subclasses build the layers and `forward_single`, and post-process."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        anchor_generator: Optional[dict] = None,
        bbox_coder: Optional[dict] = None,
        reg_decoded_bbox: bool = False,
        loss_cls: Optional[dict] = None,
        loss_bbox: Optional[dict] = None,
        train_cfg: Optional[Mapping] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__()
        if reg_decoded_bbox:
            raise ValueError(f"{type(self).__name__}: reg_decoded_bbox=True is not supported")
        if anchor_generator is None or bbox_coder is None or loss_cls is None or loss_bbox is None:
            raise ValueError(
                f"{type(self).__name__}: anchor_generator, bbox_coder, loss_cls and loss_bbox are required"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.use_sigmoid_cls = bool(loss_cls.get("use_sigmoid", False))
        self.cls_out_channels = num_classes if self.use_sigmoid_cls else num_classes + 1
        self.sampling = loss_cls["type"] not in _UNSAMPLED_LOSSES
        self.prior_generator = build_prior_generator(anchor_generator)
        self.num_base_priors = self.prior_generator.num_base_priors[0]
        self.bbox_coder = build_bbox_coder(bbox_coder)
        self.loss_cls = build_loss(loss_cls)
        self.loss_bbox = build_loss(loss_bbox)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        # Kept for config compatibility; the initialisation itself is fixed by `init_weights` (mmdetection's defaults).
        self.init_cfg = init_cfg
        if train_cfg is not None:
            self.assigner = build_assigner(require(train_cfg, "assigner", f"{type(self).__name__} train_cfg"))
            if self.sampling and "sampler" in train_cfg:
                self.sampler = build_sampler(train_cfg["sampler"])
            else:
                self.sampler = PseudoSampler()

    # ----------------------------------------------------------------------------------------------- forward
    def forward_single(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level `(B, A * cls_out_channels, H, W)` scores and `(B, A * 4, H, W)` deltas."""
        cls_scores, bbox_preds = [], []
        for feat in feats:
            cls_score, bbox_pred = self.forward_single(feat)
            cls_scores.append(cls_score)
            bbox_preds.append(bbox_pred)
        return cls_scores, bbox_preds

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
        """Losses, plus the detached proposals/detections of `get_bboxes(cfg=proposal_cfg)` when it is given.

        Extra keyword arguments (other batch keys a detector forwards) are not used by these heads.
        """
        cls_scores, bbox_preds = self(x)
        losses = self.loss(cls_scores, bbox_preds, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore=gt_bboxes_ignore)
        if proposal_cfg is None:
            return losses
        return losses, self.get_bboxes(cls_scores, bbox_preds, img_metas, cfg=proposal_cfg)

    # ----------------------------------------------------------------------------------------------- targets
    def get_anchors(
        self, featmap_sizes: list[tuple[int, int]], img_metas: list[dict], device
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Anchors (same for every image) and per-image valid flags, each concatenated over levels."""
        anchors = torch.cat(self.prior_generator.grid_priors(featmap_sizes, device=device))
        valid_flags = [
            torch.cat(self.prior_generator.valid_flags(featmap_sizes, meta["pad_shape"], device)) for meta in img_metas
        ]
        return [anchors] * len(img_metas), valid_flags

    def _inside_flags(self, anchors: torch.Tensor, valid_flags: torch.Tensor, img_shape: Sequence[int]) -> torch.Tensor:
        allowed_border = self.train_cfg.get("allowed_border", -1)
        if allowed_border < 0:
            return valid_flags
        img_h, img_w = img_shape[:2]
        return (
            valid_flags
            & (anchors[:, 0] >= -allowed_border)
            & (anchors[:, 1] >= -allowed_border)
            & (anchors[:, 2] < img_w + allowed_border)
            & (anchors[:, 3] < img_h + allowed_border)
        )

    def _get_targets_single(
        self,
        anchors: torch.Tensor,
        valid_flags: torch.Tensor,
        gt_bboxes: torch.Tensor,
        gt_bboxes_ignore: Optional[torch.Tensor],
        gt_labels: Optional[torch.Tensor],
        img_meta: dict,
    ):
        num_anchors = anchors.size(0)
        inside = self._inside_flags(anchors, valid_flags, img_meta["img_shape"])
        anchors = anchors[inside]
        assign_result = self.assigner.assign(anchors, gt_bboxes, gt_bboxes_ignore, None if self.sampling else gt_labels)
        sampling_result = self.sampler.sample(assign_result, anchors, gt_bboxes)

        num_valid = anchors.size(0)
        labels = anchors.new_full((num_valid,), self.num_classes, dtype=torch.long)
        label_weights = anchors.new_zeros(num_valid)
        bbox_targets = torch.zeros_like(anchors)
        bbox_weights = torch.zeros_like(anchors)
        pos_inds, neg_inds = sampling_result.pos_inds, sampling_result.neg_inds
        if pos_inds.numel() > 0:
            bbox_targets[pos_inds] = self.bbox_coder.encode(sampling_result.pos_bboxes, sampling_result.pos_gt_bboxes)
            bbox_weights[pos_inds] = 1.0
            if gt_labels is None:
                labels[pos_inds] = 0  # RPN: the single foreground class
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
            unmap(bbox_weights, num_anchors, inside),
            pos_inds.numel(),
            neg_inds.numel(),
        )

    def get_targets(
        self,
        anchor_list: list[torch.Tensor],
        valid_flag_list: list[torch.Tensor],
        gt_bboxes_list: list[torch.Tensor],
        img_metas: list[dict],
        num_per_level: Sequence[int],
        gt_bboxes_ignore_list: Optional[list[Optional[torch.Tensor]]] = None,
        gt_labels_list: Optional[list[torch.Tensor]] = None,
    ):
        """Per-level `(B, N_level, ...)` labels, label weights, box targets and box weights, and the positive and
        negative counts summed over images (each image counting at least 1)."""
        if self.train_cfg is None:
            raise ValueError(f"{type(self).__name__}: training needs a train_cfg")
        num_imgs = len(img_metas)
        if gt_bboxes_ignore_list is None:
            gt_bboxes_ignore_list = [None] * num_imgs
        if gt_labels_list is None:
            gt_labels_list = [None] * num_imgs
        per_image = [
            self._get_targets_single(
                anchor_list[i],
                valid_flag_list[i],
                gt_bboxes_list[i],
                gt_bboxes_ignore_list[i],
                gt_labels_list[i],
                img_metas[i],
            )
            for i in range(num_imgs)
        ]
        labels, label_weights, bbox_targets, bbox_weights, num_pos, num_neg = zip(*per_image)
        num_total_pos = sum(max(n, 1) for n in num_pos)
        num_total_neg = sum(max(n, 1) for n in num_neg)
        per_level = [
            images_to_levels(list(targets), num_per_level)
            for targets in (labels, label_weights, bbox_targets, bbox_weights)
        ]
        return (*per_level, num_total_pos, num_total_neg)

    # ----------------------------------------------------------------------------------------------- losses
    def loss_single(
        self,
        cls_score: torch.Tensor,
        bbox_pred: torch.Tensor,
        labels: torch.Tensor,
        label_weights: torch.Tensor,
        bbox_targets: torch.Tensor,
        bbox_weights: torch.Tensor,
        num_total_samples: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses of one level; the scores/deltas are flattened in anchor order `(y * W + x) * A + a`."""
        cls_score = cls_score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
        loss_cls = self.loss_cls(cls_score, labels.reshape(-1), label_weights.reshape(-1), avg_factor=num_total_samples)
        bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4)
        loss_bbox = self.loss_bbox(
            bbox_pred, bbox_targets.reshape(-1, 4), bbox_weights.reshape(-1, 4), avg_factor=num_total_samples
        )
        return loss_cls, loss_bbox

    def loss(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        gt_bboxes: list[torch.Tensor],
        gt_labels: Optional[list[torch.Tensor]],
        img_metas: list[dict],
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
    ) -> dict[str, list[torch.Tensor]]:
        """Per-level lists `loss_cls` and `loss_bbox` (their sum is the head's loss)."""
        featmap_sizes = [tuple(score.shape[-2:]) for score in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, img_metas, cls_scores[0].device)
        num_per_level = [h * w * self.num_base_priors for h, w in featmap_sizes]
        (labels, label_weights, bbox_targets, bbox_weights, num_total_pos, num_total_neg) = self.get_targets(
            anchor_list, valid_flag_list, gt_bboxes, img_metas, num_per_level, gt_bboxes_ignore, gt_labels
        )
        num_total_samples = num_total_pos + num_total_neg if self.sampling else num_total_pos
        losses_cls, losses_bbox = [], []
        for level in range(len(cls_scores)):
            loss_cls, loss_bbox = self.loss_single(
                cls_scores[level],
                bbox_preds[level],
                labels[level],
                label_weights[level],
                bbox_targets[level],
                bbox_weights[level],
                num_total_samples,
            )
            losses_cls.append(loss_cls)
            losses_bbox.append(loss_bbox)
        return dict(loss_cls=losses_cls, loss_bbox=losses_bbox)

    # ----------------------------------------------------------------------------------------------- inference
    def get_bboxes(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        img_metas: list[dict],
        cfg: Optional[Mapping] = None,
        rescale: bool = False,
    ):
        raise NotImplementedError

    def level_anchors(self, cls_scores: list[torch.Tensor]) -> list[torch.Tensor]:
        featmap_sizes = [tuple(score.shape[-2:]) for score in cls_scores]
        return self.prior_generator.grid_priors(featmap_sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)

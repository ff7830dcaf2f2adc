"""Shared2FCBBoxHead: two shared fully connected layers, then softmax classes (background last) and per-class deltas."""

from collections.abc import Mapping, Sequence
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet.core import build_bbox_coder, multiclass_nms
from mmdet.core.utils import require

from ..builder import MODELS, build_loss
from ..losses import accuracy

_DEFAULT_CODER = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2])
_DEFAULT_LOSS_CLS = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
_DEFAULT_LOSS_BBOX = dict(type="L1Loss", loss_weight=1.0)


@MODELS.register_module()
class Shared2FCBBoxHead(nn.Module):
    """`shared_fcs.0/1` (Linear + ReLU), `fc_cls` (K + 1 logits), `fc_reg` (4K deltas, or 4 if class-agnostic)."""

    def __init__(
        self,
        in_channels: int = 256,
        fc_out_channels: int = 1024,
        roi_feat_size: int = 7,
        num_classes: int = 80,
        bbox_coder: dict = _DEFAULT_CODER,
        reg_class_agnostic: bool = False,
        loss_cls: dict = _DEFAULT_LOSS_CLS,
        loss_bbox: dict = _DEFAULT_LOSS_BBOX,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__()
        if loss_cls.get("use_sigmoid", False):
            raise ValueError("Shared2FCBBoxHead: loss_cls must be softmax (use_sigmoid=False)")
        self.in_channels = in_channels
        self.roi_feat_size = roi_feat_size
        self.num_classes = num_classes
        self.reg_class_agnostic = reg_class_agnostic
        self.bbox_coder = build_bbox_coder(bbox_coder)
        self.loss_cls = build_loss(loss_cls)
        self.loss_bbox = build_loss(loss_bbox)
        self.init_cfg = init_cfg  # config compatibility only: `init_weights` applies mmdetection's defaults
        flat_size = in_channels * roi_feat_size * roi_feat_size
        self.shared_fcs = nn.ModuleList(
            [nn.Linear(flat_size, fc_out_channels), nn.Linear(fc_out_channels, fc_out_channels)]
        )
        self.fc_cls = nn.Linear(fc_out_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 4 if reg_class_agnostic else 4 * num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform shared FCs, Normal(0, 0.01) fc_cls, Normal(0, 0.001) fc_reg, zero biases."""
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, mean=0.0, std=0.01)
        nn.init.normal_(self.fc_reg.weight, mean=0.0, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)

    # ----------------------------------------------------------------------------------------------- training
    def _targets_single(
        self,
        pos_bboxes: torch.Tensor,
        neg_bboxes: torch.Tensor,
        pos_gt_bboxes: torch.Tensor,
        pos_gt_labels: torch.Tensor,
        pos_weight: float,
    ):
        num_pos, num_neg = pos_bboxes.size(0), neg_bboxes.size(0)
        num_samples = num_pos + num_neg
        labels = pos_bboxes.new_full((num_samples,), self.num_classes, dtype=torch.long)
        label_weights = pos_bboxes.new_zeros(num_samples)
        bbox_targets = pos_bboxes.new_zeros(num_samples, 4)
        bbox_weights = pos_bboxes.new_zeros(num_samples, 4)
        if num_pos > 0:
            labels[:num_pos] = pos_gt_labels
            label_weights[:num_pos] = 1.0 if pos_weight <= 0 else pos_weight
            bbox_targets[:num_pos] = self.bbox_coder.encode(pos_bboxes, pos_gt_bboxes)
            bbox_weights[:num_pos] = 1.0
        if num_neg > 0:
            label_weights[num_pos:] = 1.0
        return labels, label_weights, bbox_targets, bbox_weights

    def get_targets(self, sampling_results: Sequence, rcnn_train_cfg: Mapping):
        """Targets of the sampled RoIs (positives first, then negatives, per image), images concatenated."""
        pos_weight = rcnn_train_cfg.get("pos_weight", -1)
        per_image = [
            self._targets_single(res.pos_bboxes, res.neg_bboxes, res.pos_gt_bboxes, res.pos_gt_labels, pos_weight)
            for res in sampling_results
        ]
        return tuple(torch.cat(parts, dim=0) for parts in zip(*per_image))

    def loss(
        self,
        cls_score: torch.Tensor,
        bbox_pred: torch.Tensor,
        labels: torch.Tensor,
        label_weights: torch.Tensor,
        bbox_targets: torch.Tensor,
        bbox_weights: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """`loss_cls` (softmax CE over the weighted samples), `acc` (percent, logged only) and `loss_bbox`
        (L1 on the gt class's deltas of positives, averaged over all sampled RoIs)."""
        losses = {}
        avg_factor = max(float((label_weights > 0).sum()), 1.0)
        losses["loss_cls"] = self.loss_cls(cls_score, labels, label_weights, avg_factor=avg_factor)
        losses["acc"] = accuracy(cls_score, labels)
        positive = (labels >= 0) & (labels < self.num_classes)
        if bool(positive.any()):
            if self.reg_class_agnostic:
                pos_pred = bbox_pred.view(bbox_pred.size(0), 4)[positive]
            else:
                pos_pred = bbox_pred.view(bbox_pred.size(0), -1, 4)[positive, labels[positive]]
            losses["loss_bbox"] = self.loss_bbox(
                pos_pred, bbox_targets[positive], bbox_weights[positive], avg_factor=bbox_targets.size(0)
            )
        else:
            losses["loss_bbox"] = bbox_pred[positive].sum()
        return losses

    # ----------------------------------------------------------------------------------------------- refinement
    def regress_by_class(
        self, rois: torch.Tensor, labels: torch.Tensor, bbox_pred: torch.Tensor, img_meta: Mapping
    ) -> torch.Tensor:
        """Move `rois` by their predicted deltas: `(N, 4)` boxes or `(N, 5)` RoIs (the batch index is kept).

        Class-specific heads use the 4 deltas of each RoI's `labels` entry; class-agnostic heads their only 4. The
        new boxes are clipped to `img_meta["img_shape"]`.
        """
        if rois.size(-1) not in (4, 5):
            raise ValueError(f"regress_by_class: rois must be (N, 4) or (N, 5), got {tuple(rois.shape)}")
        if not self.reg_class_agnostic:
            columns = labels.long()[:, None] * 4 + torch.arange(4, device=labels.device)
            bbox_pred = bbox_pred.gather(1, columns)
        if bbox_pred.size(-1) != 4:
            raise ValueError(f"regress_by_class: expected 4 deltas per RoI, got {tuple(bbox_pred.shape)}")
        boxes = rois if rois.size(-1) == 4 else rois[:, 1:]
        new_boxes = self.bbox_coder.decode(boxes, bbox_pred, max_shape=img_meta["img_shape"])
        if rois.size(-1) == 4:
            return new_boxes
        return torch.cat([rois[:, :1], new_boxes], dim=1)

    def refine_bboxes(
        self,
        rois: torch.Tensor,
        labels: torch.Tensor,
        bbox_preds: torch.Tensor,
        pos_is_gts: Sequence[torch.Tensor],
        img_metas: Sequence[Mapping],
    ) -> list[torch.Tensor]:
        """The next stage's proposals during training: each image's sampled RoIs moved by their deltas
        (`regress_by_class`), without the positives that were gt boxes (`pos_is_gts`, positives come first).

        Returns one `(n_i, 4)` tensor per image, in the RoIs' order.
        """
        refined = []
        for img_id, img_meta in enumerate(img_metas):
            inds = torch.nonzero(rois[:, 0] == img_id, as_tuple=False).flatten()
            boxes = self.regress_by_class(rois[inds, 1:], labels[inds], bbox_preds[inds], img_meta)
            keep = torch.ones(inds.numel(), dtype=torch.bool, device=rois.device)
            is_gt = pos_is_gts[img_id].bool().to(rois.device)
            keep[: is_gt.numel()] = ~is_gt
            refined.append(boxes[keep])
        return refined

    # ----------------------------------------------------------------------------------------------- inference
    def get_bboxes(
        self,
        rois: torch.Tensor,
        cls_score: torch.Tensor,
        bbox_pred: torch.Tensor,
        img_shape: Sequence[int],
        scale_factor,
        rescale: bool = False,
        cfg: Optional[Mapping] = None,
    ):
        """Softmax scores, decoded and clipped per-class boxes (divided by `scale_factor` when `rescale`), then
        multi-class NMS with `cfg` (score_thr, nms, max_per_img); without `cfg` the raw boxes and scores."""
        scores = F.softmax(cls_score, dim=-1)
        bboxes = self.bbox_coder.decode(rois[:, 1:], bbox_pred, max_shape=img_shape)
        if rescale and bboxes.size(0) > 0:
            scale = bboxes.new_tensor(scale_factor)
            bboxes = (bboxes.view(bboxes.size(0), -1, 4) / scale).view(bboxes.size(0), -1)
        if cfg is None:
            return bboxes, scores
        where = "Shared2FCBBoxHead test_cfg"
        return multiclass_nms(
            bboxes,
            scores,
            require(cfg, "score_thr", where),
            require(cfg, "nms", where),
            require(cfg, "max_per_img", where),
        )

    def get_bboxes_per_image(
        self,
        rois: torch.Tensor,
        cls_score: torch.Tensor,
        bbox_pred: torch.Tensor,
        counts: Sequence[int],
        img_metas: Sequence[dict],
        rescale: bool,
        cfg: Mapping,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """:meth:`get_bboxes` image by image over a batch of RoIs.

        Args:
            rois: (sum(counts), 5) RoIs of every image, in image order.
            cls_score: (sum(counts), num_classes + 1) logits.
            bbox_pred: (sum(counts), 4 * num_classes) deltas.
            counts: the number of RoIs of each image.
            img_metas: per image, with `img_shape` and `scale_factor`.
            rescale: boxes in the original image's coordinates.
            cfg: the rcnn test config (score_thr, nms, max_per_img).

        Returns:
            Per image `det_bboxes (k, 5)` and `det_labels (k,)`.
        """
        det_bboxes, det_labels = [], []
        for img_rois, img_scores, img_deltas, img_meta in zip(
            rois.split(counts), cls_score.split(counts), bbox_pred.split(counts), img_metas
        ):
            if img_rois.size(0) == 0:
                det_bboxes.append(rois.new_zeros((0, 5)))
                det_labels.append(rois.new_zeros((0,), dtype=torch.long))
                continue
            bboxes, labels = self.get_bboxes(
                img_rois, img_scores, img_deltas, img_meta["img_shape"], img_meta["scale_factor"], rescale, cfg
            )
            det_bboxes.append(bboxes)
            det_labels.append(labels)
        return det_bboxes, det_labels

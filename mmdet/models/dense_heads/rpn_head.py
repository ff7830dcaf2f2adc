"""RPN head of Faster R-CNN: one shared 3x3 conv, then per-anchor objectness and deltas; proposal generation."""

from collections.abc import Mapping
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet.core import batched_nms, sorted_topk
from mmdet.core.utils import require

from ..builder import MODELS
from .anchor_head import AnchorHead

_DEFAULT_ANCHORS = dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])
_DEFAULT_CODER = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4)
_DEFAULT_LOSS_CLS = dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)
_DEFAULT_LOSS_BBOX = dict(type="L1Loss", loss_weight=1.0)


@MODELS.register_module()
class RPNHead(AnchorHead):
    """Layers `rpn_conv` (3x3 + ReLU), `rpn_cls` (1x1, A logits) and `rpn_reg` (1x1, 4A deltas)."""

    def __init__(
        self,
        in_channels: int,
        feat_channels: int = 256,
        anchor_generator: dict = _DEFAULT_ANCHORS,
        bbox_coder: dict = _DEFAULT_CODER,
        loss_cls: dict = _DEFAULT_LOSS_CLS,
        loss_bbox: dict = _DEFAULT_LOSS_BBOX,
        train_cfg: Optional[Mapping] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__(
            num_classes=1,
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
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, self.num_base_priors * self.cls_out_channels, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, self.num_base_priors * 4, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """Normal(0, 0.01) weights, zero biases."""
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward_single(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)

    def loss(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        gt_bboxes: list[torch.Tensor],
        gt_labels: Optional[list[torch.Tensor]],
        img_metas: list[dict],
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
    ) -> dict[str, list[torch.Tensor]]:
        """`loss_rpn_cls` and `loss_rpn_bbox` per level; gt labels are not used (class-agnostic)."""
        losses = super().loss(cls_scores, bbox_preds, gt_bboxes, None, img_metas, gt_bboxes_ignore=gt_bboxes_ignore)
        return dict(loss_rpn_cls=losses["loss_cls"], loss_rpn_bbox=losses["loss_bbox"])

    def simple_test_rpn(self, x: list[torch.Tensor], img_metas: list[dict]) -> list[torch.Tensor]:
        """Test-time proposals `(n, 5)` per image (box + objectness) in network-input coordinates."""
        cls_scores, bbox_preds = self(x)
        return self.get_bboxes(cls_scores, bbox_preds, img_metas)

    def get_bboxes(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        img_metas: list[dict],
        cfg: Optional[Mapping] = None,
        rescale: bool = False,
    ) -> list[torch.Tensor]:
        """Proposals per image; `cfg` defaults to `test_cfg` (training passes `train_cfg.rpn_proposal`)."""
        if rescale:
            raise ValueError("RPNHead.get_bboxes: proposals stay in network-input coordinates (rescale=False)")
        cfg = self.test_cfg if cfg is None else cfg
        anchors = self.level_anchors(cls_scores)
        return [
            self._proposals_single(
                [s[i].detach() for s in cls_scores], [b[i].detach() for b in bbox_preds], anchors, img_metas[i], cfg
            )
            for i in range(len(img_metas))
        ]

    def _proposals_single(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        anchors: list[torch.Tensor],
        img_meta: dict,
        cfg: Mapping,
    ) -> torch.Tensor:
        where = "RPNHead proposal cfg"
        nms_pre = require(cfg, "nms_pre", where)
        max_per_img = require(cfg, "max_per_img", where)
        nms_cfg = require(cfg, "nms", where)
        min_bbox_size = cfg.get("min_bbox_size", -1)

        scores, deltas, level_anchors, level_ids = [], [], [], []
        for level, (cls_score, bbox_pred, level_anchor) in enumerate(zip(cls_scores, bbox_preds, anchors)):
            score = cls_score.permute(1, 2, 0).reshape(-1)
            score = score.sigmoid() if self.use_sigmoid_cls else score.view(-1, 2).softmax(dim=1)[:, 0]
            delta = bbox_pred.permute(1, 2, 0).reshape(-1, 4)
            if 0 < nms_pre < score.numel():
                score, top = sorted_topk(score, nms_pre)
                delta, level_anchor = delta[top], level_anchor[top]
            scores.append(score)
            deltas.append(delta)
            level_anchors.append(level_anchor)
            level_ids.append(torch.full((score.numel(),), level, dtype=torch.long, device=score.device))

        scores, ids = torch.cat(scores), torch.cat(level_ids)
        proposals = self.bbox_coder.decode(torch.cat(level_anchors), torch.cat(deltas), max_shape=img_meta["img_shape"])
        if min_bbox_size >= 0:
            widths = proposals[:, 2] - proposals[:, 0]
            heights = proposals[:, 3] - proposals[:, 1]
            keep = (widths > min_bbox_size) & (heights > min_bbox_size)
            if not bool(keep.all()):
                proposals, scores, ids = proposals[keep], scores[keep], ids[keep]
        dets, _ = batched_nms(proposals, scores, ids, nms_cfg)
        return dets[:max_per_img]

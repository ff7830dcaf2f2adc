"""RetinaNet head: 4 stacked 3x3 conv+ReLU towers for classification and regression, sigmoid classes."""

import math
from collections.abc import Mapping
from typing import Optional

import torch
import torch.nn as nn

from mmdet.core import batched_nms, sorted_topk
from mmdet.core.utils import require

from ..builder import MODELS
from ..utils import ConvModule
from .anchor_head import AnchorHead

_DEFAULT_ANCHORS = dict(
    type="AnchorGenerator",
    octave_base_scale=4,
    scales_per_octave=3,
    ratios=[0.5, 1.0, 2.0],
    strides=[8, 16, 32, 64, 128],
)
_DEFAULT_CODER = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4)
_DEFAULT_LOSS_CLS = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
_DEFAULT_LOSS_BBOX = dict(type="L1Loss", loss_weight=1.0)
_PRIOR_PROB = 0.01


def _logit_lower_bound(score_thr: float) -> float:
    """A logit below which the sigmoid is surely <= score_thr (margin far above float32 rounding)."""
    if score_thr <= 0:
        return -math.inf
    if score_thr >= 1:
        return math.inf
    return math.log(score_thr / (1 - score_thr)) - 1e-3


@MODELS.register_module()
class RetinaHead(AnchorHead):
    """Layers `cls_convs.i.conv`, `reg_convs.i.conv`, `retina_cls` (A * K channels, `a * K + c`), `retina_reg`."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        stacked_convs: int = 4,
        feat_channels: int = 256,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        anchor_generator: dict = _DEFAULT_ANCHORS,
        bbox_coder: dict = _DEFAULT_CODER,
        loss_cls: dict = _DEFAULT_LOSS_CLS,
        loss_bbox: dict = _DEFAULT_LOSS_BBOX,
        train_cfg: Optional[Mapping] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
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
        if not self.use_sigmoid_cls:
            raise ValueError("RetinaHead: loss_cls must use sigmoid classification (use_sigmoid=True)")
        self.stacked_convs = stacked_convs
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(stacked_convs):
            channels = in_channels if i == 0 else feat_channels
            self.cls_convs.append(
                ConvModule(channels, feat_channels, 3, stride=1, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
            )
            self.reg_convs.append(
                ConvModule(channels, feat_channels, 3, stride=1, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
            )
        self.retina_cls = nn.Conv2d(feat_channels, self.num_base_priors * self.cls_out_channels, 3, padding=1)
        self.retina_reg = nn.Conv2d(feat_channels, self.num_base_priors * 4, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        """Normal(0, 0.01) on every conv, bias 0, except `retina_cls` bias -ln((1 - 0.01) / 0.01)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.retina_cls.bias, -math.log((1 - _PRIOR_PROB) / _PRIOR_PROB))

    def forward_single(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls_feat = reg_feat = x
        for cls_conv, reg_conv in zip(self.cls_convs, self.reg_convs):
            cls_feat = cls_conv(cls_feat)
            reg_feat = reg_conv(reg_feat)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)

    def simple_test(
        self, feats: list[torch.Tensor], img_metas: list[dict], rescale: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image `(det_bboxes (k, 5), det_labels (k,))`; original-image coordinates when `rescale`."""
        cls_scores, bbox_preds = self(feats)
        return self.get_bboxes(cls_scores, bbox_preds, img_metas, rescale=rescale)

    def get_bboxes(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        img_metas: list[dict],
        cfg: Optional[Mapping] = None,
        rescale: bool = False,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.test_cfg if cfg is None else cfg
        anchors = self.level_anchors(cls_scores)
        return [
            self._detections_single(
                [s[i].detach() for s in cls_scores],
                [b[i].detach() for b in bbox_preds],
                anchors,
                img_metas[i],
                cfg,
                rescale,
            )
            for i in range(len(img_metas))
        ]

    def _level_candidates(
        self, cls_score: torch.Tensor, bbox_pred: torch.Tensor, anchors: torch.Tensor, score_thr: float, nms_pre: int
    ) -> tuple[torch.Tensor, ...]:
        """Scores, labels, anchors and deltas of one level's (anchor, class) pairs with score > score_thr, best
        `nms_pre` first (threshold, then top-k over pairs).

        Works on the head's `(A * K, H, W)` layout: the sigmoid is monotonic, so a slightly looser test on the logits
        finds every candidate without a sigmoid (or a transposed copy) of all A * K * H * W elements; the exact
        `sigmoid > score_thr` test then runs on those few. Candidates are put in mmdetection's order (anchor-major,
        then class) before the sort so equal scores rank as there.
        """
        num_classes, num_anchors = self.cls_out_channels, self.num_base_priors
        width = cls_score.size(2)
        loose = cls_score > _logit_lower_bound(score_thr)
        channel, y, x = torch.nonzero(loose, as_tuple=True)
        anchor_in_cell = torch.div(channel, num_classes, rounding_mode="floor")
        labels = channel - anchor_in_cell * num_classes
        anchor_index = (y * width + x) * num_anchors + anchor_in_cell
        order = (anchor_index * num_classes + labels).argsort()
        channel, y, x, anchor_in_cell, labels, anchor_index = (
            t[order] for t in (channel, y, x, anchor_in_cell, labels, anchor_index)
        )
        scores = cls_score[channel, y, x].sigmoid()
        above = scores > score_thr
        scores = scores[above]
        scores, rank = sorted_topk(scores, nms_pre if nms_pre > 0 else scores.numel())
        picked = torch.nonzero(above, as_tuple=False).flatten()[rank]
        deltas = bbox_pred.view(num_anchors, 4, *bbox_pred.shape[1:])[anchor_in_cell[picked], :, y[picked], x[picked]]
        return scores, labels[picked], anchors[anchor_index[picked]], deltas

    def _detections_single(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        anchors: list[torch.Tensor],
        img_meta: dict,
        cfg: Mapping,
        rescale: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        where = "RetinaHead test_cfg"
        nms_pre = require(cfg, "nms_pre", where)
        score_thr = require(cfg, "score_thr", where)
        nms_cfg = require(cfg, "nms", where)
        max_per_img = require(cfg, "max_per_img", where)

        levels = [
            self._level_candidates(cls_score, bbox_pred, level_anchors, score_thr, nms_pre)
            for cls_score, bbox_pred, level_anchors in zip(cls_scores, bbox_preds, anchors)
        ]
        scores, labels, level_anchors, deltas = (torch.cat(parts) for parts in zip(*levels))
        bboxes = self.bbox_coder.decode(level_anchors, deltas, max_shape=img_meta["img_shape"])
        if rescale:
            bboxes = bboxes / bboxes.new_tensor(img_meta["scale_factor"])
        dets, keep = batched_nms(bboxes, scores, labels, nms_cfg)
        return dets[:max_per_img], labels[keep][:max_per_img]

"""Faster R-CNN second stage: sample proposals, pool their features, classify and refine them."""

from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from mmdet.core import bbox2result, bbox2roi, build_assigner, build_sampler
from mmdet.core.utils import require

from ..builder import MODELS


@MODELS.register_module()
class StandardRoIHead(nn.Module):
    """`bbox_roi_extractor` + `bbox_head` (mmdetection 2.x names); mask branches are not supported."""

    def __init__(
        self,
        bbox_roi_extractor: dict,
        bbox_head: dict,
        train_cfg: Optional[Mapping] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__()
        self.bbox_roi_extractor = MODELS.build(dict(bbox_roi_extractor))
        self.bbox_head = MODELS.build(dict(bbox_head))
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.init_cfg = init_cfg  # config compatibility only: the sub-modules initialise themselves
        if train_cfg is not None:
            self.bbox_assigner = build_assigner(require(train_cfg, "assigner", "StandardRoIHead train_cfg"))
            self.bbox_sampler = build_sampler(require(train_cfg, "sampler", "StandardRoIHead train_cfg"))

    @property
    def with_bbox(self) -> bool:
        return True

    @property
    def with_mask(self) -> bool:
        return False

    @property
    def with_shared_head(self) -> bool:
        return False

    @property
    def num_classes(self) -> int:
        return self.bbox_head.num_classes

    def _bbox_forward(self, x: Sequence[torch.Tensor], rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bbox_feats = self.bbox_roi_extractor(x[: self.bbox_roi_extractor.num_inputs], rois)
        return self.bbox_head(bbox_feats)

    def forward_train(
        self,
        x: Sequence[torch.Tensor],
        img_metas: list[dict],
        proposal_list: list[torch.Tensor],
        gt_bboxes: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        """`loss_cls`, `loss_bbox` and `acc`. Extra keyword arguments (other batch keys) are not used."""
        if self.train_cfg is None:
            raise ValueError("StandardRoIHead: training needs a train_cfg (assigner, sampler)")
        num_imgs = len(img_metas)
        if gt_bboxes_ignore is None:
            gt_bboxes_ignore = [None] * num_imgs
        sampling_results = []
        for i in range(num_imgs):
            assign_result = self.bbox_assigner.assign(proposal_list[i], gt_bboxes[i], gt_bboxes_ignore[i], gt_labels[i])
            sampling_results.append(
                self.bbox_sampler.sample(assign_result, proposal_list[i], gt_bboxes[i], gt_labels[i])
            )
        rois = bbox2roi([res.bboxes for res in sampling_results])
        cls_score, bbox_pred = self._bbox_forward(x, rois)
        targets = self.bbox_head.get_targets(sampling_results, self.train_cfg)
        return self.bbox_head.loss(cls_score, bbox_pred, *targets)

    def simple_test_bboxes(
        self,
        x: Sequence[torch.Tensor],
        img_metas: list[dict],
        proposals: list[torch.Tensor],
        rcnn_test_cfg: Optional[Mapping],
        rescale: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image `det_bboxes (k, 5)` and `det_labels (k,)`."""
        rois = bbox2roi(proposals)
        if rois.size(0) == 0:
            empty_bboxes = rois.new_zeros((0, 5))
            empty_labels = rois.new_zeros((0,), dtype=torch.long)
            return [empty_bboxes] * len(proposals), [empty_labels] * len(proposals)
        cls_score, bbox_pred = self._bbox_forward(x, rois)
        counts = [p.size(0) for p in proposals]
        det_bboxes, det_labels = [], []
        for i, (img_rois, img_scores, img_deltas) in enumerate(
            zip(rois.split(counts), cls_score.split(counts), bbox_pred.split(counts))
        ):
            if img_rois.size(0) == 0:
                det_bboxes.append(rois.new_zeros((0, 5)))
                det_labels.append(rois.new_zeros((0,), dtype=torch.long))
                continue
            bboxes, labels = self.bbox_head.get_bboxes(
                img_rois,
                img_scores,
                img_deltas,
                img_metas[i]["img_shape"],
                img_metas[i]["scale_factor"],
                rescale=rescale,
                cfg=rcnn_test_cfg,
            )
            det_bboxes.append(bboxes)
            det_labels.append(labels)
        return det_bboxes, det_labels

    def simple_test(
        self, x: Sequence[torch.Tensor], proposal_list: list[torch.Tensor], img_metas: list[dict], rescale: bool = False
    ) -> list[list[np.ndarray]]:
        """Per image a list of `num_classes` float32 arrays `(k, 5)`."""
        if self.test_cfg is None:
            raise ValueError("StandardRoIHead: testing needs a test_cfg (score_thr, nms, max_per_img)")
        det_bboxes, det_labels = self.simple_test_bboxes(x, img_metas, proposal_list, self.test_cfg, rescale=rescale)
        return [bbox2result(bboxes, labels, self.num_classes) for bboxes, labels in zip(det_bboxes, det_labels)]

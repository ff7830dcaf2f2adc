"""Faster R-CNN / Mask R-CNN second stage: sample proposals, pool their features, classify and refine them; with a
mask branch, predict a mask for each positive RoI (training) and for each final detection (test)."""

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
    """`bbox_roi_extractor` + `bbox_head`, optionally `mask_roi_extractor` + `mask_head` (mmdetection 2.x names).

    Without a `mask_roi_extractor` the mask branch pools with the box extractor (mmdetection's shared extractor).
    """

    def __init__(
        self,
        bbox_roi_extractor: dict,
        bbox_head: dict,
        mask_roi_extractor: Optional[dict] = None,
        mask_head: Optional[dict] = None,
        train_cfg: Optional[Mapping] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__()
        self.bbox_roi_extractor = MODELS.build(dict(bbox_roi_extractor))
        self.bbox_head = MODELS.build(dict(bbox_head))
        self.mask_head = None
        self.share_roi_extractor = False
        if mask_head is not None:
            if mask_roi_extractor is not None:
                self.mask_roi_extractor = MODELS.build(dict(mask_roi_extractor))
            else:
                self.share_roi_extractor = True
                self.mask_roi_extractor = self.bbox_roi_extractor
            self.mask_head = MODELS.build(dict(mask_head))
        elif mask_roi_extractor is not None:
            raise ValueError("StandardRoIHead: a mask_roi_extractor needs a mask_head")
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
        return self.mask_head is not None

    @property
    def with_shared_head(self) -> bool:
        return False

    @property
    def num_classes(self) -> int:
        return self.bbox_head.num_classes

    def _bbox_forward(self, x: Sequence[torch.Tensor], rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bbox_feats = self.bbox_roi_extractor(x[: self.bbox_roi_extractor.num_inputs], rois)
        return self.bbox_head(bbox_feats)

    def _mask_forward(self, x: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Mask logits `(N, C, 28, 28)` of `rois` `(N, 5)`."""
        mask_feats = self.mask_roi_extractor(x[: self.mask_roi_extractor.num_inputs], rois)
        return self.mask_head(mask_feats)

    def forward_train(
        self,
        x: Sequence[torch.Tensor],
        img_metas: list[dict],
        proposal_list: list[torch.Tensor],
        gt_bboxes: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
        gt_masks: Optional[list] = None,
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        """`loss_cls`, `loss_bbox` and `acc`; with a mask head also `loss_mask`, which needs `gt_masks` (per image a
        `(num_gts, H, W)` 0/1 tensor or array on the padded canvas). Other keyword arguments (batch keys) are not
        used."""
        if self.train_cfg is None:
            raise ValueError("StandardRoIHead: training needs a train_cfg (assigner, sampler)")
        if self.with_mask and gt_masks is None:
            raise ValueError(
                "StandardRoIHead: the mask head needs gt_masks for training; load them with "
                "LoadAnnotations(with_mask=True) and collect 'gt_masks'"
            )
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
        losses = dict(self.bbox_head.loss(cls_score, bbox_pred, *targets))
        if self.with_mask:
            pos_rois = bbox2roi([res.pos_bboxes for res in sampling_results])
            mask_pred = self._mask_forward(x, pos_rois)
            mask_targets = self.mask_head.get_targets(sampling_results, gt_masks, self.train_cfg)
            pos_labels = torch.cat([res.pos_gt_labels for res in sampling_results])
            losses.update(self.mask_head.loss(mask_pred, mask_targets, pos_labels))
        return losses

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
        return self.bbox_head.get_bboxes_per_image(
            rois, cls_score, bbox_pred, counts, img_metas, rescale, rcnn_test_cfg
        )

    def simple_test_mask(
        self,
        x: Sequence[torch.Tensor],
        img_metas: list[dict],
        det_bboxes: list[torch.Tensor],
        det_labels: list[torch.Tensor],
        rescale: bool = False,
    ) -> list[list[list[np.ndarray]]]:
        """Per image, per class the masks of its detections (see `FCNMaskHead.get_seg_masks`).

        The mask RoIs are the final boxes; rescaled ones are multiplied back by `scale_factor` to network-input
        coordinates (not clipped again).
        """
        num_classes = self.mask_head.num_classes
        if all(bboxes.shape[0] == 0 for bboxes in det_bboxes):
            return [[[] for _ in range(num_classes)] for _ in det_bboxes]
        boxes = []
        for bboxes, meta in zip(det_bboxes, img_metas):
            if rescale:
                scale = torch.as_tensor(np.asarray(meta["scale_factor"], dtype=np.float32)).to(bboxes)
                boxes.append(bboxes[:, :4] * scale)
            else:
                boxes.append(bboxes[:, :4])
        mask_pred = self._mask_forward(x, bbox2roi(boxes))
        segm_results = []
        for i, img_mask_pred in enumerate(mask_pred.split([b.shape[0] for b in boxes])):
            if boxes[i].shape[0] == 0:
                segm_results.append([[] for _ in range(num_classes)])
                continue
            segm_results.append(
                self.mask_head.get_seg_masks(
                    img_mask_pred,
                    boxes[i],
                    det_labels[i],
                    self.test_cfg,
                    img_metas[i]["ori_shape"],
                    img_metas[i]["scale_factor"],
                    rescale,
                )
            )
        return segm_results

    def simple_test(
        self, x: Sequence[torch.Tensor], proposal_list: list[torch.Tensor], img_metas: list[dict], rescale: bool = False
    ) -> list:
        """Per image a list of `num_classes` float32 arrays `(k, 5)`; with a mask head the tuple `(that list, masks)`
        where `masks[c]` lists the image-sized masks of class c's detections in the same order (bool `(H, W)`
        arrays of the original image with `rescale`)."""
        if self.test_cfg is None:
            raise ValueError("StandardRoIHead: testing needs a test_cfg (score_thr, nms, max_per_img)")
        det_bboxes, det_labels = self.simple_test_bboxes(x, img_metas, proposal_list, self.test_cfg, rescale=rescale)
        bbox_results = [bbox2result(bboxes, labels, self.num_classes) for bboxes, labels in zip(det_bboxes, det_labels)]
        if not self.with_mask:
            return bbox_results
        segm_results = self.simple_test_mask(x, img_metas, det_bboxes, det_labels, rescale=rescale)
        return list(zip(bbox_results, segm_results))

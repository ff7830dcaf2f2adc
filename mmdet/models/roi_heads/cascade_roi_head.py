"""Cascade R-CNN second stage: a chain of box heads, each refining the boxes the previous one produced.

Stage ``i`` pools features of its input boxes with its own RoI extractor and predicts class logits and box deltas
with its own box head (own coder stds, own IoU thresholds during training). At test time every RoI goes through
all stages; the class scores are the softmax of the stages' logits averaged, the boxes the last stage's regression
of its (twice refined) input boxes. Training samples targets per stage from the previous stage's refined boxes and
weights each stage's losses by ``stage_loss_weights``; they are logged as ``s{i}.loss_cls``, ``s{i}.acc``,
``s{i}.loss_bbox``.
"""

from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn

from mmdet.core import bbox2result, bbox2roi, build_assigner, build_sampler
from mmdet.core.utils import require

from ..builder import MODELS

StageCfg = Union[Mapping, Sequence[Mapping]]


def _per_stage(cfg: StageCfg, num_stages: int, name: str) -> list[Mapping]:
    """One config per stage: a single mapping is repeated, a list must have one entry per stage."""
    if isinstance(cfg, Mapping):
        return [cfg] * num_stages
    cfgs = list(cfg)
    if len(cfgs) != num_stages:
        raise ValueError(f"CascadeRoIHead: {name} has {len(cfgs)} entries for num_stages={num_stages}")
    return cfgs


@MODELS.register_module()
class CascadeRoIHead(nn.Module):
    """mmdetection 2.x ``CascadeRoIHead`` (box branch only): ``bbox_roi_extractor.{i}``, ``bbox_head.{i}``.

    ``bbox_roi_extractor`` / ``bbox_head`` are one config (repeated for every stage) or a list with one per stage;
    ``train_cfg`` is a list with one ``{assigner, sampler, pos_weight}`` per stage, ``test_cfg`` one mapping
    (score_thr, nms, max_per_img) for the final detections.
    """

    def __init__(
        self,
        num_stages: int,
        stage_loss_weights: Sequence[float],
        bbox_roi_extractor: StageCfg,
        bbox_head: StageCfg,
        mask_roi_extractor: Optional[StageCfg] = None,
        mask_head: Optional[StageCfg] = None,
        shared_head: Optional[Mapping] = None,
        train_cfg: Optional[Sequence[Mapping]] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__()
        if mask_roi_extractor is not None or mask_head is not None:
            raise ValueError("CascadeRoIHead: mask branches (Cascade Mask R-CNN) are not supported")
        if shared_head is not None:
            raise ValueError("CascadeRoIHead: shared_head is not supported")
        if num_stages < 1:
            raise ValueError(f"CascadeRoIHead: num_stages must be >= 1, got {num_stages}")
        if len(stage_loss_weights) != num_stages:
            raise ValueError(
                f"CascadeRoIHead: {len(stage_loss_weights)} stage_loss_weights for num_stages={num_stages}"
            )
        self.num_stages = num_stages
        self.stage_loss_weights = [float(w) for w in stage_loss_weights]
        self.bbox_roi_extractor = nn.ModuleList(
            MODELS.build(dict(cfg)) for cfg in _per_stage(bbox_roi_extractor, num_stages, "bbox_roi_extractor")
        )
        self.bbox_head = nn.ModuleList(
            MODELS.build(dict(cfg)) for cfg in _per_stage(bbox_head, num_stages, "bbox_head")
        )
        num_classes = {head.num_classes for head in self.bbox_head}
        if len(num_classes) != 1:
            raise ValueError(f"CascadeRoIHead: the stages' box heads disagree on num_classes: {sorted(num_classes)}")
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.init_cfg = init_cfg  # config compatibility only: the sub-modules initialise themselves
        self.bbox_assigner: list = []
        self.bbox_sampler: list = []
        if train_cfg is not None:
            if isinstance(train_cfg, Mapping) or len(train_cfg) != num_stages:
                raise ValueError(
                    f"CascadeRoIHead: train_cfg (train_cfg.rcnn of the detector) must be a list of {num_stages} "
                    "per-stage configs"
                )
            for stage, stage_cfg in enumerate(train_cfg):
                where = f"CascadeRoIHead train_cfg[{stage}]"
                self.bbox_assigner.append(build_assigner(require(stage_cfg, "assigner", where)))
                self.bbox_sampler.append(build_sampler(require(stage_cfg, "sampler", where)))

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
        return self.bbox_head[-1].num_classes

    def _bbox_forward(
        self, stage: int, x: Sequence[torch.Tensor], rois: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage `stage`'s class logits `(N, K + 1)` and deltas `(N, 4)` (or `(N, 4K)`) of `rois` `(N, 5)`."""
        extractor = self.bbox_roi_extractor[stage]
        return self.bbox_head[stage](extractor(x[: extractor.num_inputs], rois))

    # ----------------------------------------------------------------------------------------------- training
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
        """`s{i}.loss_cls`, `s{i}.acc`, `s{i}.loss_bbox` for every stage; the losses (not acc) are multiplied by
        the stage's weight. Extra keyword arguments (other batch keys) are not used."""
        if self.train_cfg is None:
            raise ValueError("CascadeRoIHead: training needs a train_cfg (one assigner and sampler per stage)")
        num_imgs = len(img_metas)
        if gt_bboxes_ignore is None:
            gt_bboxes_ignore = [None] * num_imgs
        losses: dict[str, torch.Tensor] = {}
        for stage in range(self.num_stages):
            assigner, sampler = self.bbox_assigner[stage], self.bbox_sampler[stage]
            sampling_results = []
            for i in range(num_imgs):
                assign_result = assigner.assign(proposal_list[i], gt_bboxes[i], gt_bboxes_ignore[i], gt_labels[i])
                sampling_results.append(sampler.sample(assign_result, proposal_list[i], gt_bboxes[i], gt_labels[i]))
            head = self.bbox_head[stage]
            rois = bbox2roi([res.bboxes for res in sampling_results])
            cls_score, bbox_pred = self._bbox_forward(stage, x, rois)
            targets = head.get_targets(sampling_results, self.train_cfg[stage])
            weight = self.stage_loss_weights[stage]
            for name, value in head.loss(cls_score, bbox_pred, *targets).items():
                losses[f"s{stage}.{name}"] = value * weight if "loss" in name else value

            if stage < self.num_stages - 1:
                with torch.no_grad():
                    # Background RoIs take their best foreground class: only class-specific regression reads it.
                    labels = targets[0]
                    labels = torch.where(labels == head.num_classes, cls_score[:, :-1].argmax(dim=1), labels)
                    proposal_list = head.refine_bboxes(
                        rois, labels, bbox_pred, [res.pos_is_gt for res in sampling_results], img_metas
                    )
        return losses

    # ----------------------------------------------------------------------------------------------- inference
    def simple_test_bboxes(
        self,
        x: Sequence[torch.Tensor],
        img_metas: list[dict],
        proposals: list[torch.Tensor],
        rcnn_test_cfg: Optional[Mapping],
        rescale: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image `det_bboxes (k, 5)` and `det_labels (k,)`.

        Every RoI goes through every stage (no filtering in between); stage `i < last` moves the RoIs by its deltas
        (label = argmax over the foreground logits) for stage `i + 1`. Scores: softmax of the mean of the stages'
        logits. Boxes: the last stage's deltas applied to its input RoIs.
        """
        rois = bbox2roi(proposals)
        num_imgs = len(proposals)
        if rois.size(0) == 0:
            empty_bboxes = rois.new_zeros((0, 5))
            empty_labels = rois.new_zeros((0,), dtype=torch.long)
            return [empty_bboxes] * num_imgs, [empty_labels] * num_imgs
        counts = [p.size(0) for p in proposals]
        stage_scores = []
        for stage in range(self.num_stages):
            cls_score, bbox_pred = self._bbox_forward(stage, x, rois)
            stage_scores.append(cls_score)
            if stage < self.num_stages - 1:
                head = self.bbox_head[stage]
                labels = cls_score[:, :-1].argmax(dim=1)
                rois = torch.cat(
                    [
                        head.regress_by_class(img_rois, img_labels, img_deltas, img_metas[i])
                        for i, (img_rois, img_labels, img_deltas) in enumerate(
                            zip(rois.split(counts), labels.split(counts), bbox_pred.split(counts))
                        )
                    ]
                )
        mean_score = sum(stage_scores) / float(self.num_stages)

        last_head = self.bbox_head[-1]
        return last_head.get_bboxes_per_image(rois, mean_score, bbox_pred, counts, img_metas, rescale, rcnn_test_cfg)

    def simple_test(
        self, x: Sequence[torch.Tensor], proposal_list: list[torch.Tensor], img_metas: list[dict], rescale: bool = False
    ) -> list[list[np.ndarray]]:
        """Per image a list of `num_classes` float32 arrays `(k, 5)`."""
        if self.test_cfg is None:
            raise ValueError("CascadeRoIHead: testing needs a test_cfg (score_thr, nms, max_per_img)")
        det_bboxes, det_labels = self.simple_test_bboxes(x, img_metas, proposal_list, self.test_cfg, rescale=rescale)
        return [bbox2result(bboxes, labels, self.num_classes) for bboxes, labels in zip(det_bboxes, det_labels)]

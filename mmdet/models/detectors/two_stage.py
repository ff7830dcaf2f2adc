"""Two-stage detectors: backbone -> neck -> RPN proposals -> RoI head."""

from typing import Optional

import torch

from ..builder import MODELS, build_backbone, build_head, build_neck
from .base import BaseDetector, LossValue, sub_cfg, with_head_cfgs, with_pretrained


@MODELS.register_module()
class TwoStageDetector(BaseDetector):
    """The RPN head gets ``train_cfg.rpn``/``test_cfg.rpn``; the RoI head ``train_cfg.rcnn``/``test_cfg.rcnn``.
    During training, proposals for the RoI head follow ``train_cfg.rpn_proposal``."""

    def __init__(
        self,
        backbone: dict,
        neck: Optional[dict] = None,
        rpn_head: Optional[dict] = None,
        roi_head: Optional[dict] = None,
        train_cfg: Optional[dict] = None,
        test_cfg: Optional[dict] = None,
        pretrained: Optional[str] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__(init_cfg)
        self.backbone = build_backbone(with_pretrained(backbone, pretrained))
        self.neck = build_neck(neck) if neck is not None else None
        self.rpn_head = None
        if rpn_head is not None:
            self.rpn_head = build_head(with_head_cfgs(rpn_head, sub_cfg(train_cfg, "rpn"), sub_cfg(test_cfg, "rpn")))
        self.roi_head = None
        if roi_head is not None:
            self.roi_head = build_head(with_head_cfgs(roi_head, sub_cfg(train_cfg, "rcnn"), sub_cfg(test_cfg, "rcnn")))
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    @property
    def with_rpn(self) -> bool:
        return self.rpn_head is not None

    @property
    def with_roi_head(self) -> bool:
        return self.roi_head is not None

    def forward_train(
        self,
        img: torch.Tensor,
        img_metas: list[dict],
        gt_bboxes: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
        proposals: Optional[list[torch.Tensor]] = None,
        **kwargs,
    ) -> dict[str, LossValue]:
        self.set_batch_input_shape(img, img_metas)
        x = self.extract_feat(img)
        losses: dict[str, LossValue] = {}
        if self.with_rpn:
            proposal_cfg = sub_cfg(self.train_cfg, "rpn_proposal") or sub_cfg(self.test_cfg, "rpn")
            rpn_losses, proposal_list = self.rpn_head.forward_train(
                x,
                img_metas,
                gt_bboxes,
                gt_labels=None,
                gt_bboxes_ignore=gt_bboxes_ignore,
                proposal_cfg=proposal_cfg,
                **kwargs,
            )
            losses.update(rpn_losses)
        elif proposals is not None:
            proposal_list = proposals
        else:
            raise ValueError("a two-stage detector without rpn_head needs `proposals` in forward_train")
        losses.update(
            self.roi_head.forward_train(x, img_metas, proposal_list, gt_bboxes, gt_labels, gt_bboxes_ignore, **kwargs)
        )
        return losses

    def simple_test(
        self,
        img: torch.Tensor,
        img_metas: list[dict],
        proposals: Optional[list[torch.Tensor]] = None,
        rescale: bool = False,
    ) -> list:
        """Per image: a list of ``num_classes`` float32 arrays (k, 5) = x1, y1, x2, y2, score."""
        if self.roi_head is None:
            raise RuntimeError(f"{type(self).__name__} has no roi_head to test with")
        self.set_batch_input_shape(img, img_metas)
        x = self.extract_feat(img)
        if proposals is None:
            proposals = self.rpn_head.simple_test_rpn(x, img_metas)
        return self.roi_head.simple_test(x, proposals, img_metas, rescale=rescale)

    def forward_dummy(self, img: torch.Tensor) -> tuple:
        """Raw head outputs without post-processing (for FLOP counting / tracing)."""
        x = self.extract_feat(img)
        return self.rpn_head(x)

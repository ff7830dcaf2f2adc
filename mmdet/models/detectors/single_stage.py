"""Single-stage detectors: backbone -> neck -> dense head."""

from typing import Optional

import torch

from mmdet.core import bbox2result

from ..builder import MODELS, build_backbone, build_head, build_neck
from .base import BaseDetector, LossValue, with_head_cfgs, with_pretrained


@MODELS.register_module()
class SingleStageDetector(BaseDetector):
    """The dense head gets the detector's whole ``train_cfg``/``test_cfg``."""

    def __init__(
        self,
        backbone: dict,
        neck: Optional[dict] = None,
        bbox_head: Optional[dict] = None,
        train_cfg: Optional[dict] = None,
        test_cfg: Optional[dict] = None,
        pretrained: Optional[str] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__(init_cfg)
        if bbox_head is None:
            raise ValueError(f"{type(self).__name__} needs a bbox_head config")
        self.backbone = build_backbone(with_pretrained(backbone, pretrained))
        self.neck = build_neck(neck) if neck is not None else None
        self.bbox_head = build_head(with_head_cfgs(bbox_head, train_cfg, test_cfg))
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    def forward_train(
        self,
        img: torch.Tensor,
        img_metas: list[dict],
        gt_bboxes: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        gt_bboxes_ignore: Optional[list[torch.Tensor]] = None,
    ) -> dict[str, LossValue]:
        self.set_batch_input_shape(img, img_metas)
        x = self.extract_feat(img)
        return self.bbox_head.forward_train(x, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore)

    def simple_test(self, img: torch.Tensor, img_metas: list[dict], rescale: bool = False) -> list:
        """Per image: a list of ``num_classes`` float32 arrays (k, 5) = x1, y1, x2, y2, score."""
        self.set_batch_input_shape(img, img_metas)
        feats = self.extract_feat(img)
        results = self.bbox_head.simple_test(feats, img_metas, rescale=rescale)
        return [bbox2result(bboxes, labels, self.bbox_head.num_classes) for bboxes, labels in results]

    def forward_dummy(self, img: torch.Tensor) -> tuple:
        """Raw head outputs without post-processing (for FLOP counting / tracing)."""
        return self.bbox_head(self.extract_feat(img))

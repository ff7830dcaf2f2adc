"""Shared layers of the point-based dense heads (FCOS): two conv towers, class and box predictors, point priors."""

import math
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import torch
import torch.nn as nn

from mmdet.core import MlvlPointGenerator, build_bbox_coder

from ..builder import build_loss
from ..utils import ConvModule

_DEFAULT_LOSS_CLS = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
_DEFAULT_LOSS_BBOX = dict(type="IoULoss", loss_weight=1.0)
_DEFAULT_CODER = dict(type="DistancePointBBoxCoder")
_PRIOR_PROB = 0.01


class AnchorFreeHead(nn.Module):
    """Towers `cls_convs.i` / `reg_convs.i` (ConvModule 3x3 + norm + ReLU), predictors `conv_cls` (C channels,
    sigmoid classes) and `conv_reg` (4 channels), and one point per location (`MlvlPointGenerator`, offset 0.5).

    Subclasses add their own branches, the per-level `forward_single`, targets, losses and post-processing.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        dcn_on_last_conv: bool = False,
        conv_bias: Union[bool, str] = "auto",
        loss_cls: dict = _DEFAULT_LOSS_CLS,
        loss_bbox: dict = _DEFAULT_LOSS_BBOX,
        bbox_coder: dict = _DEFAULT_CODER,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        train_cfg: Optional[Mapping] = None,
        test_cfg: Optional[Mapping] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__()
        name = type(self).__name__
        if dcn_on_last_conv:
            raise ValueError(f"{name}: dcn_on_last_conv=True (deformable convolution) is not supported")
        if conv_bias != "auto" and not isinstance(conv_bias, bool):
            raise ValueError(f"{name}: conv_bias must be 'auto', True or False, got {conv_bias!r}")
        if not loss_cls.get("use_sigmoid", False):
            raise ValueError(f"{name}: loss_cls must use sigmoid classification (use_sigmoid=True)")
        self.num_classes = num_classes
        self.cls_out_channels = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.strides = list(strides)
        self.dcn_on_last_conv = dcn_on_last_conv
        self.conv_bias = conv_bias
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.use_sigmoid_cls = True
        self.loss_cls = build_loss(loss_cls)
        self.loss_bbox = build_loss(loss_bbox)
        self.bbox_coder = build_bbox_coder(bbox_coder)
        self.prior_generator = MlvlPointGenerator(self.strides)
        self.num_base_priors = 1
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        # Kept for config compatibility; the initialisation itself is fixed by `init_weights` (mmdetection's defaults).
        self.init_cfg = init_cfg
        self.cls_convs = self._tower()
        self.reg_convs = self._tower()
        self.conv_cls = nn.Conv2d(feat_channels, self.cls_out_channels, 3, padding=1)
        self.conv_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)

    def _tower(self) -> nn.ModuleList:
        return nn.ModuleList(
            ConvModule(
                self.in_channels if i == 0 else self.feat_channels,
                self.feat_channels,
                3,
                stride=1,
                padding=1,
                bias=self.conv_bias,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg,
            )
            for i in range(self.stacked_convs)
        )

    def init_weights(self) -> None:
        """Normal(0, 0.01) on every conv of the head, bias 0, `conv_cls` bias -ln((1 - 0.01) / 0.01); norms 1 / 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - _PRIOR_PROB) / _PRIOR_PROB))

    def forward_single(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One level through both towers.

        Args:
            x: `(B, in_channels, H, W)` feature map.

        Returns:
            `cls_score (B, C, H, W)`, `bbox_pred (B, 4, H, W)` (raw `conv_reg` output), and the last tower features
            `cls_feat`, `reg_feat` (each `(B, feat_channels, H, W)`).
        """
        cls_feat = x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        reg_feat = x
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.conv_cls(cls_feat), self.conv_reg(reg_feat), cls_feat, reg_feat

    def level_points(self, featmap_sizes: Sequence[tuple[int, int]], dtype: torch.dtype, device) -> list[torch.Tensor]:
        """Per level `(H * W, 2)` points `((x + 0.5) * s, (y + 0.5) * s)`, row-major."""
        return self.prior_generator.grid_priors(featmap_sizes, dtype=dtype, device=device)

"""FCNMaskHead (Mask R-CNN): convs on the pooled RoI features, 2x upsampling, one mask logit map per class; and
the pasting of the predicted masks back into the image, as mmdetection 2.28 does it."""

from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet.core import mask_target
from mmdet.core.utils import require

from ..builder import MODELS, build_loss
from ..utils import ConvModule

_DEFAULT_UPSAMPLE = dict(type="deconv", scale_factor=2)
_DEFAULT_LOSS_MASK = dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0)
_UPSAMPLE_TYPES = (None, "deconv", "nearest", "bilinear")


def paste_mask_region(
    masks: torch.Tensor, boxes: torch.Tensor, img_h: int, img_w: int
) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Sample `masks (N, 1, h, w)` (probabilities) at the image pixels covered by `boxes (N, 4)`.

    Pixel (row r, column c) has its centre at (c + 0.5, r + 0.5); it reads the mask at the normalised position
    `u = (c + 0.5 - x1) / (x2 - x1) * 2 - 1` (and `v` from the rows), infinite positions (boxes of zero width or
    height) replaced by 0, by bilinear `grid_sample` with `align_corners=False` and zero padding: mask cell j covers
    `[x1 + j * w / 28, x1 + (j + 1) * w / 28]` for a 28-wide mask, and values fade to 0 across the box border.

    Only the region from one pixel before the boxes' smallest corner to one after their largest, clamped to the
    image, is computed; returns the values `(N, rows, columns)` there and the `(row slice, column slice)` of the
    region.
    """
    device = masks.device
    x_lo, y_lo = (int(v) for v in torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32))
    x_hi = int(torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(torch.int32))
    y_hi = int(torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(torch.int32))
    x1, y1, x2, y2 = torch.split(boxes, 1, dim=1)
    rows = torch.arange(y_lo, y_hi, device=device).to(torch.float32) + 0.5
    cols = torch.arange(x_lo, x_hi, device=device).to(torch.float32) + 0.5
    v = (rows - y1) / (y2 - y1) * 2 - 1
    u = (cols - x1) / (x2 - x1) * 2 - 1
    u = torch.where(torch.isinf(u), torch.zeros_like(u), u)
    v = torch.where(torch.isinf(v), torch.zeros_like(v), v)
    num = masks.shape[0]
    grid = torch.stack(
        [u[:, None, :].expand(num, v.size(1), u.size(1)), v[:, :, None].expand(num, v.size(1), u.size(1))], dim=3
    )
    values = F.grid_sample(masks.to(torch.float32), grid, align_corners=False)[:, 0]
    return values, (slice(y_lo, y_hi), slice(x_lo, x_hi))


def paste_masks_in_image(
    masks: torch.Tensor, boxes: torch.Tensor, img_h: int, img_w: int, threshold: float = 0.5
) -> torch.Tensor:
    """Masks `(N, h, w)` (probabilities) pasted into an `img_h x img_w` canvas at `boxes (N, 4)` (x1, y1, x2, y2).

    One detection at a time over its own region (see `paste_mask_region`); the rest of the canvas is 0. With
    `threshold >= 0`: bool masks `value >= threshold`; below 0: uint8 `value * 255` (truncated).

    This is mmdetection 2.28's CPU path on every device. Its GPU path samples the whole image in chunks; the
    thresholded masks agree wherever a box has a positive width and height, because outside a box's region the
    interpolated value stays below 0.5. (A box of zero width or height marks, there, its rows or columns across
    the whole image; here, as on mmdetection's CPU, only the pixels of its one-pixel margin.)
    """
    num = masks.shape[0]
    dtype = torch.bool if threshold >= 0 else torch.uint8
    canvas = torch.zeros(num, img_h, img_w, device=masks.device, dtype=dtype)
    for i in range(num):
        values, (rows, cols) = paste_mask_region(masks[i : i + 1, None], boxes[i : i + 1], img_h, img_w)
        if threshold >= 0:
            canvas[i, rows, cols] = values[0] >= threshold
        else:
            canvas[i, rows, cols] = (values[0] * 255).to(torch.uint8)
    return canvas


@MODELS.register_module()
class FCNMaskHead(nn.Module):
    """`convs.{i}` (ConvModule: conv + optional norm + ReLU), `upsample` (a 2x ConvTranspose2d, then ReLU) and
    `conv_logits` (1x1, one map per class, or one when `class_agnostic`): mmdetection 2.28's names and shapes.

    A 14x14 RoI feature gives `(N, num_classes, 28, 28)` mask logits.
    """

    def __init__(
        self,
        num_convs: int = 4,
        roi_feat_size: int = 14,
        in_channels: int = 256,
        conv_kernel_size: int = 3,
        conv_out_channels: int = 256,
        num_classes: int = 80,
        class_agnostic: bool = False,
        upsample_cfg: Optional[Mapping] = _DEFAULT_UPSAMPLE,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        predictor_cfg: Optional[Mapping] = None,
        loss_mask: Mapping = _DEFAULT_LOSS_MASK,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__()
        upsample_cfg = dict(upsample_cfg) if upsample_cfg is not None else dict(type=None)
        method = upsample_cfg.pop("type", None)
        if method not in _UPSAMPLE_TYPES:
            raise ValueError(f"FCNMaskHead: upsample type {method!r} is not supported; choose from {_UPSAMPLE_TYPES}")
        scale = upsample_cfg.pop("scale_factor", None)
        if method is not None and not (isinstance(scale, int) and scale > 0):
            raise ValueError(f"FCNMaskHead: upsample {method!r} needs an integer scale_factor > 0, got {scale!r}")
        if predictor_cfg is not None and dict(predictor_cfg).get("type", "Conv") not in ("Conv", "Conv2d"):
            raise ValueError(f"FCNMaskHead: predictor_cfg {dict(predictor_cfg)!r}: only a plain Conv2d is supported")
        self.num_convs = num_convs
        self.roi_feat_size = (roi_feat_size, roi_feat_size) if isinstance(roi_feat_size, int) else roi_feat_size
        self.in_channels = in_channels
        self.conv_kernel_size = conv_kernel_size
        self.conv_out_channels = conv_out_channels
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        self.upsample_method = method
        self.scale_factor = scale
        self.loss_mask = build_loss(dict(loss_mask))
        self.init_cfg = init_cfg  # config compatibility only: `init_weights` applies mmdetection's defaults

        padding = (conv_kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            ConvModule(
                in_channels if i == 0 else conv_out_channels,
                conv_out_channels,
                conv_kernel_size,
                padding=padding,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
            )
            for i in range(num_convs)
        )
        upsample_in = conv_out_channels if num_convs > 0 else in_channels
        if method is None:
            self.upsample = None
        elif method == "deconv":
            self.upsample = nn.ConvTranspose2d(upsample_in, conv_out_channels, kernel_size=scale, stride=scale)
        else:
            self.upsample = nn.Upsample(
                scale_factor=scale, mode=method, align_corners=None if method == "nearest" else False
            )
        logits_in = conv_out_channels if method == "deconv" else upsample_in
        self.conv_logits = nn.Conv2d(logits_in, 1 if class_agnostic else num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming-normal (fan_out, ReLU) weights and zero biases for the convs (ConvModule's own init), the deconv
        and conv_logits."""
        for layer in (self.upsample, self.conv_logits):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        if self.upsample is not None:
            x = self.upsample(x)
            if self.upsample_method == "deconv":
                x = self.relu(x)
        return self.conv_logits(x)

    # ----------------------------------------------------------------------------------------------- training
    def get_targets(self, sampling_results: Sequence, gt_masks: Sequence, rcnn_train_cfg: Mapping) -> torch.Tensor:
        """The `(num_pos, 28, 28)` targets of the positive RoIs of every image (see `mmdet.core.mask_target`)."""
        return mask_target(
            [res.pos_bboxes for res in sampling_results],
            [res.pos_assigned_gt_inds for res in sampling_results],
            gt_masks,
            rcnn_train_cfg,
        )

    def loss(self, mask_pred: torch.Tensor, mask_targets: torch.Tensor, labels: torch.Tensor) -> dict:
        """`loss_mask`: BCE of each positive RoI's gt-class logits against its target (0 with the graph kept when
        there is no positive RoI)."""
        if mask_pred.size(0) == 0:
            return {"loss_mask": mask_pred.sum()}
        if self.class_agnostic:
            labels = torch.zeros_like(labels)
        return {"loss_mask": self.loss_mask(mask_pred, mask_targets, labels)}

    # ----------------------------------------------------------------------------------------------- inference
    def get_seg_masks(
        self,
        mask_pred: torch.Tensor,
        det_bboxes: torch.Tensor,
        det_labels: torch.Tensor,
        rcnn_test_cfg: Mapping,
        ori_shape: Sequence[int],
        scale_factor,
        rescale: bool,
    ) -> list[list[np.ndarray]]:
        """Per class, the image-sized masks of its detections (in detection order).

        `mask_pred (k, C, h, w)` are logits; `det_bboxes` are in network-input coordinates. With `rescale` the boxes
        are divided by `scale_factor` and the canvas is `ori_shape`; without, the canvas is `ori_shape` times the
        scale, rounded. The sigmoid of the label's channel is pasted (`paste_masks_in_image`) with
        `rcnn_test_cfg['mask_thr_binary']`: bool masks, or uint8 0-255 masks when it is negative.
        """
        probs = mask_pred.sigmoid()
        boxes = det_bboxes[:, :4]
        scale = torch.as_tensor(np.asarray(scale_factor, dtype=np.float32)).to(boxes)
        if rescale:
            img_h, img_w = int(ori_shape[0]), int(ori_shape[1])
            boxes = boxes / scale
        else:
            img_h = int(np.round(ori_shape[0] * float(scale[1])))
            img_w = int(np.round(ori_shape[1] * float(scale[0])))
        num = probs.size(0)
        if not self.class_agnostic:
            probs = probs[torch.arange(num, device=probs.device), det_labels]
        else:
            probs = probs[:, 0]
        threshold = require(rcnn_test_cfg, "mask_thr_binary", "FCNMaskHead test_cfg")
        pasted = paste_masks_in_image(probs, boxes, img_h, img_w, threshold)
        per_class: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        for mask, label in zip(pasted.cpu().numpy(), det_labels.tolist()):
            per_class[label].append(mask)
        return per_class

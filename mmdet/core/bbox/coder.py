"""(dx, dy, dw, dh) box coder of mmdetection 2.x: no +1, only dw/dh are clamped, decoded boxes clipped to img_shape."""

import math
from collections.abc import Sequence
from typing import Optional

import torch

from ..builder import TASK_UTILS


def _centre_size(boxes: torch.Tensor):
    cx = (boxes[..., 0] + boxes[..., 2]) * 0.5
    cy = (boxes[..., 1] + boxes[..., 3]) * 0.5
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return cx, cy, w, h


@TASK_UTILS.register_module()
class DeltaXYWHBBoxCoder:
    """Encode boxes as normalised centre/size deltas against reference boxes and back.

    `decode` accepts class-specific deltas `(N, 4K)`: the reference box is reused for every group of 4.
    """

    def __init__(
        self,
        target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clip_border: bool = True,
        add_ctr_clamp: bool = False,
        ctr_clamp: int = 32,
    ):
        if len(target_means) != 4 or len(target_stds) != 4:
            raise ValueError(
                f"DeltaXYWHBBoxCoder: target_means/target_stds need 4 values, got {target_means}, {target_stds}"
            )
        if add_ctr_clamp:
            raise ValueError("DeltaXYWHBBoxCoder: add_ctr_clamp=True is not supported (the configs here use False)")
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.clip_border = clip_border

    def encode(self, bboxes: torch.Tensor, gt_bboxes: torch.Tensor) -> torch.Tensor:
        """Deltas `(N, 4)` that move `bboxes` onto `gt_bboxes` (both `(N, 4)`)."""
        if bboxes.shape[:-1] != gt_bboxes.shape[:-1]:
            raise ValueError(
                f"DeltaXYWHBBoxCoder.encode: {tuple(bboxes.shape)} boxes vs {tuple(gt_bboxes.shape)} targets"
            )
        px, py, pw, ph = _centre_size(bboxes.float())
        gx, gy, gw, gh = _centre_size(gt_bboxes.float())
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        return (deltas - means) / stds

    def decode(
        self,
        bboxes: torch.Tensor,
        pred_bboxes: torch.Tensor,
        max_shape: Optional[Sequence[int]] = None,
        wh_ratio_clip: float = 16 / 1000,
    ) -> torch.Tensor:
        """Boxes `(N, 4K)` from reference boxes `(N, 4)` and deltas `(N, 4K)`, clipped to `max_shape` (h, w)."""
        if pred_bboxes.size(-1) % 4 != 0 or bboxes.size(-1) != 4 or bboxes.size(0) != pred_bboxes.size(0):
            raise ValueError(
                f"DeltaXYWHBBoxCoder.decode: boxes {tuple(bboxes.shape)} and deltas "
                f"{tuple(pred_bboxes.shape)} do not match (expected (N, 4) and (N, 4K))"
            )
        num_boxes = pred_bboxes.size(0)
        deltas = pred_bboxes.reshape(num_boxes, pred_bboxes.size(-1) // 4, 4)
        deltas = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        px, py, pw, ph = (v[:, None] for v in _centre_size(bboxes))
        max_ratio = abs(math.log(wh_ratio_clip))
        dw = deltas[..., 2].clamp(min=-max_ratio, max=max_ratio)
        dh = deltas[..., 3].clamp(min=-max_ratio, max=max_ratio)
        gx = px + pw * deltas[..., 0]
        gy = py + ph * deltas[..., 1]
        gw = pw * dw.exp()
        gh = ph * dh.exp()
        x1, y1, x2, y2 = gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5
        if self.clip_border and max_shape is not None:
            height, width = max_shape[0], max_shape[1]
            x1, x2 = x1.clamp(min=0, max=width), x2.clamp(min=0, max=width)
            y1, y2 = y1.clamp(min=0, max=height), y2.clamp(min=0, max=height)
        return torch.stack([x1, y1, x2, y2], dim=-1).reshape(num_boxes, pred_bboxes.size(-1))

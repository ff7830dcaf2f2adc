"""Anchor generator of mmdetection 2.x: float anchors, no rounding, centred on `stride * index`."""

import math
from collections.abc import Sequence
from typing import Optional, Union

import torch

from ..builder import TASK_UTILS

Stride = Union[int, float, Sequence[float]]


def _as_pair(stride: Stride) -> tuple[float, float]:
    if isinstance(stride, (int, float)):
        return stride, stride
    if len(stride) != 2:
        raise ValueError(f"AnchorGenerator: a stride is a number or a (w, h) pair, got {stride!r}")
    return stride[0], stride[1]


@TASK_UTILS.register_module()
class AnchorGenerator:
    """Per-level anchors for a square-stride feature pyramid.

    Within a location anchors are ratio-major (index `ratio_index * num_scales + scale_index`); within a level the
    flat index is `(y * W + x) * A + a`; ratios are height / width.
    """

    def __init__(
        self,
        strides: Sequence[Stride],
        ratios: Sequence[float],
        scales: Optional[Sequence[float]] = None,
        base_sizes: Optional[Sequence[float]] = None,
        scale_major: bool = True,
        octave_base_scale: Optional[float] = None,
        scales_per_octave: Optional[int] = None,
        center_offset: float = 0.0,
    ):
        if (scales is None) == (octave_base_scale is None):
            raise ValueError(
                "AnchorGenerator: give either `scales` or `octave_base_scale` with `scales_per_octave`, "
                f"got scales={scales!r}, octave_base_scale={octave_base_scale!r}"
            )
        if scales is None:
            if scales_per_octave is None:
                raise ValueError("AnchorGenerator: `octave_base_scale` needs `scales_per_octave`")
            # float64 powers first, float32 storage second (as mmdetection).
            scales = [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        if not 0.0 <= center_offset < 1.0:
            raise ValueError(f"AnchorGenerator: center_offset must be in [0, 1), got {center_offset}")
        self.strides = [_as_pair(s) for s in strides]
        self.base_sizes = list(base_sizes) if base_sizes is not None else [min(s) for s in self.strides]
        if len(self.base_sizes) != len(self.strides):
            raise ValueError(f"AnchorGenerator: {len(self.base_sizes)} base_sizes for {len(self.strides)} strides")
        self.ratios = torch.tensor(ratios, dtype=torch.float32)
        self.scales = torch.tensor(scales, dtype=torch.float32)
        self.scale_major = scale_major
        self.center_offset = center_offset
        self.base_anchors = [self._base_anchors(size) for size in self.base_sizes]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_anchors(self) -> list[int]:
        return [anchors.size(0) for anchors in self.base_anchors]

    num_base_priors = num_base_anchors

    def _base_anchors(self, base_size: float) -> torch.Tensor:
        h_ratios = torch.sqrt(self.ratios)
        w_ratios = 1 / h_ratios
        if self.scale_major:
            ws = (base_size * w_ratios[:, None] * self.scales[None, :]).reshape(-1)
            hs = (base_size * h_ratios[:, None] * self.scales[None, :]).reshape(-1)
        else:
            ws = (base_size * self.scales[:, None] * w_ratios[None, :]).reshape(-1)
            hs = (base_size * self.scales[:, None] * h_ratios[None, :]).reshape(-1)
        cx = cy = self.center_offset * base_size
        return torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)

    def _check_levels(self, featmap_sizes: Sequence[tuple[int, int]]) -> None:
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"AnchorGenerator: got {len(featmap_sizes)} feature maps for {self.num_levels} strides")

    def single_level_grid_priors(
        self, featmap_size: tuple[int, int], level: int, dtype: torch.dtype = torch.float32, device="cpu"
    ) -> torch.Tensor:
        feat_h, feat_w = featmap_size
        stride_w, stride_h = self.strides[level]
        shift_x = torch.arange(feat_w, device=device).to(dtype) * stride_w
        shift_y = torch.arange(feat_h, device=device).to(dtype) * stride_h
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        base = self.base_anchors[level].to(device=device, dtype=dtype)
        return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)

    def grid_priors(
        self, featmap_sizes: Sequence[tuple[int, int]], dtype: torch.dtype = torch.float32, device="cpu"
    ) -> list[torch.Tensor]:
        """Anchors of every level, each `(H * W * A, 4)`."""
        self._check_levels(featmap_sizes)
        return [
            self.single_level_grid_priors(tuple(size), level, dtype, device) for level, size in enumerate(featmap_sizes)
        ]

    def valid_flags(
        self, featmap_sizes: Sequence[tuple[int, int]], pad_shape: Sequence[int], device="cpu"
    ) -> list[torch.Tensor]:
        """Per level, True for anchors whose cell lies inside the image's own padded shape (not the batch padding)."""
        self._check_levels(featmap_sizes)
        pad_h, pad_w = pad_shape[:2]
        flags = []
        for level, (feat_h, feat_w) in enumerate(featmap_sizes):
            stride_w, stride_h = self.strides[level]
            valid_h = min(int(math.ceil(pad_h / stride_h)), feat_h)
            valid_w = min(int(math.ceil(pad_w / stride_w)), feat_w)
            valid_y = torch.arange(feat_h, device=device) < valid_h
            valid_x = torch.arange(feat_w, device=device) < valid_w
            cell = (valid_y[:, None] & valid_x[None, :]).reshape(-1)
            flags.append(cell[:, None].expand(-1, self.num_base_anchors[level]).reshape(-1))
        return flags

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(strides={self.strides}, ratios={self.ratios.tolist()}, "
            f"scales={self.scales.tolist()}, base_sizes={self.base_sizes})"
        )

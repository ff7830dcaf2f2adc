"""Point priors of the anchor-free heads (mmdetection 2.x MlvlPointGenerator): one point per feature-map cell."""

import math
from collections.abc import Sequence
from typing import Union

import torch

from ..builder import TASK_UTILS

Stride = Union[int, float, Sequence[float]]


def _as_pair(stride: Stride) -> tuple[float, float]:
    if isinstance(stride, (int, float)):
        return stride, stride
    if len(stride) != 2:
        raise ValueError(f"MlvlPointGenerator: a stride is a number or a (w, h) pair, got {stride!r}")
    return stride[0], stride[1]


@TASK_UTILS.register_module()
class MlvlPointGenerator:
    """Per level, the point `((x + offset) * stride_w, (y + offset) * stride_h)` of every cell, row-major
    (flat index `y * W + x`). FCOS uses `offset=0.5` (cell centres: 4, 12, 20, ... at stride 8).
    """

    def __init__(self, strides: Sequence[Stride], offset: float = 0.5):
        self.strides = [_as_pair(s) for s in strides]
        self.offset = offset

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """One point per location on every level."""
        return [1] * self.num_levels

    def _check_levels(self, featmap_sizes: Sequence[tuple[int, int]]) -> None:
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"MlvlPointGenerator: got {len(featmap_sizes)} feature maps for {self.num_levels} strides")

    def single_level_grid_priors(
        self,
        featmap_size: tuple[int, int],
        level: int,
        dtype: torch.dtype = torch.float32,
        device="cpu",
        with_stride: bool = False,
    ) -> torch.Tensor:
        """Points of one level.

        Args:
            featmap_size: `(H, W)` of the level.
            level: index into `strides`.
            dtype, device: of the result.
            with_stride: append the level's `(stride_w, stride_h)` to every point.

        Returns:
            `(H * W, 2)` points `(x, y)`, or `(H * W, 4)` `(x, y, stride_w, stride_h)` with `with_stride`.
        """
        feat_h, feat_w = featmap_size
        stride_w, stride_h = self.strides[level]
        shift_x = ((torch.arange(feat_w, device=device) + self.offset) * stride_w).to(dtype)
        shift_y = ((torch.arange(feat_h, device=device) + self.offset) * stride_h).to(dtype)
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)  # (H, W) -> (H * W,), row-major
        if not with_stride:
            return torch.stack([xx, yy], dim=-1)
        return torch.stack([xx, yy, torch.full_like(xx, stride_w), torch.full_like(yy, stride_h)], dim=-1)

    def grid_priors(
        self,
        featmap_sizes: Sequence[tuple[int, int]],
        dtype: torch.dtype = torch.float32,
        device="cpu",
        with_stride: bool = False,
    ) -> list[torch.Tensor]:
        """Points of every level, each `(H * W, 2)` (`(H * W, 4)` with `with_stride`)."""
        self._check_levels(featmap_sizes)
        return [
            self.single_level_grid_priors(tuple(size), level, dtype, device, with_stride)
            for level, size in enumerate(featmap_sizes)
        ]

    def valid_flags(
        self, featmap_sizes: Sequence[tuple[int, int]], pad_shape: Sequence[int], device="cpu"
    ) -> list[torch.Tensor]:
        """Per level `(H * W,)`: True for points whose cell lies inside the image's own padded shape."""
        self._check_levels(featmap_sizes)
        pad_h, pad_w = pad_shape[:2]
        flags = []
        for level, (feat_h, feat_w) in enumerate(featmap_sizes):
            stride_w, stride_h = self.strides[level]
            valid_h = min(int(math.ceil(pad_h / stride_h)), feat_h)
            valid_w = min(int(math.ceil(pad_w / stride_w)), feat_w)
            valid_y = torch.arange(feat_h, device=device) < valid_h
            valid_x = torch.arange(feat_w, device=device) < valid_w
            flags.append((valid_y[:, None] & valid_x[None, :]).reshape(-1))
        return flags

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strides={self.strides}, offset={self.offset})"

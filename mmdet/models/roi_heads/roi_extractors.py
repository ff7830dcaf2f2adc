"""RoI feature extraction from an FPN: each RoI is pooled on one level chosen by its scale."""

from collections.abc import Mapping, Sequence
from typing import Optional, Union

import torch
import torch.nn as nn
from torchvision.ops import roi_align

from ..builder import MODELS


class RoIAlign(nn.Module):
    """mmcv-style RoIAlign (average pooling) on `torchvision.ops.roi_align`; `aligned=True` shifts by -0.5 pixel."""

    def __init__(
        self,
        output_size: Union[int, tuple[int, int]],
        spatial_scale: float,
        sampling_ratio: int = 0,
        aligned: bool = True,
    ):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, feats: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_align(
            feats,
            rois.to(feats.dtype),
            self.output_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


def _build_roi_layer(layer_cfg: Mapping, stride: float) -> RoIAlign:
    cfg = dict(layer_cfg)
    layer_type = cfg.pop("type", None)
    pool_mode = cfg.pop("pool_mode", "avg")
    if layer_type != "RoIAlign" or pool_mode != "avg":
        raise ValueError(
            f"SingleRoIExtractor roi_layer {dict(layer_cfg)!r}: only type='RoIAlign' with pool_mode='avg' is supported"
        )
    unknown = set(cfg) - {"output_size", "sampling_ratio", "aligned"}
    if unknown or "output_size" not in cfg:
        raise ValueError(
            f"SingleRoIExtractor roi_layer {dict(layer_cfg)!r}: expected keys output_size, "
            f"sampling_ratio, aligned; unknown {sorted(unknown)}"
        )
    return RoIAlign(spatial_scale=1.0 / stride, **cfg)


@MODELS.register_module()
class SingleRoIExtractor(nn.Module):
    """Pools every RoI `[batch_index, x1, y1, x2, y2]` on level `floor(log2(sqrt(area) / finest_scale + 1e-6))`."""

    def __init__(
        self,
        roi_layer: Mapping,
        out_channels: int,
        featmap_strides: Sequence[float],
        finest_scale: int = 56,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__()
        self.roi_layers = nn.ModuleList(_build_roi_layer(roi_layer, stride) for stride in featmap_strides)
        self.out_channels = out_channels
        self.featmap_strides = list(featmap_strides)
        self.finest_scale = finest_scale
        self.init_cfg = init_cfg  # config compatibility only: the extractor has no parameters

    @property
    def num_inputs(self) -> int:
        return len(self.featmap_strides)

    def map_roi_levels(self, rois: torch.Tensor, num_levels: int) -> torch.Tensor:
        """Level index of every RoI (0 = finest), clamped to the available levels."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return levels.clamp(min=0, max=num_levels - 1).long()

    def forward(self, feats: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        if len(feats) < self.num_inputs:
            raise ValueError(f"SingleRoIExtractor: {len(feats)} feature maps for {self.num_inputs} strides")
        output_size = self.roi_layers[0].output_size
        roi_feats = feats[0].new_zeros(rois.size(0), self.out_channels, *output_size)
        if self.num_inputs == 1:
            return self.roi_layers[0](feats[0], rois)
        levels = self.map_roi_levels(rois, self.num_inputs)
        for level in range(self.num_inputs):
            inds = torch.nonzero(levels == level, as_tuple=False).flatten()
            if inds.numel() > 0:
                roi_feats[inds] = self.roi_layers[level](feats[level], rois[inds])
            else:
                # Keeps every level in the graph so distributed training sees a gradient for each.
                roi_feats = roi_feats + feats[level].sum() * 0.0
        return roi_feats

"""mmdet's ResNet BasicBlock and Bottleneck as quantized blocks, each reconstructed as one unit.

Inner layers are `QuantizedLayer`s (weight-quantized conv, folded ReLU, optional output quantizer); the block adds
the shortcut, applies the final ReLU and quantizes its output once, where the next unit's input is quantized in
deployment.
"""

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from qdrop.model.errors import PlacementError
from qdrop.quantization import QuantizedBlock, QuantizedLayer, QuantizerConfig


def _fused_conv(block: nn.Module, conv_name: str, bn_name: str) -> nn.Conv2d:
    """The conv `conv_name` of `block`, checking that its BatchNorm `bn_name` has been folded into it."""
    bn = getattr(block, bn_name, None)
    if bn is not None and not isinstance(bn, nn.Identity):
        raise PlacementError(
            f"{type(block).__name__}.{bn_name} is a {type(bn).__name__}: fold BatchNorm into the convs "
            "(mmdet.utils.fuse_conv_bn / --fuse-conv-bn) before quantizing"
        )
    return getattr(block, conv_name)


LayerConfigs = Callable[[str], tuple[QuantizerConfig, QuantizerConfig]]


def _same_for_every_layer(w_cfg: QuantizerConfig, a_cfg: QuantizerConfig) -> LayerConfigs:
    return lambda child: (w_cfg, a_cfg)


def _downsample(block: nn.Module, w_cfg: QuantizerConfig) -> Optional[QuantizedLayer]:
    """The shortcut's conv as a layer without output quantizer (the sum is quantized after the block's ReLU)."""
    if block.downsample is None:
        return None
    convs = [m for m in block.downsample if isinstance(m, nn.Conv2d)]
    others = [m for m in block.downsample if not isinstance(m, (nn.Conv2d, nn.Identity))]
    if len(convs) != 1 or others:
        raise PlacementError(
            f"downsample branch {block.downsample} must be one conv with its BatchNorm folded "
            "(mmdet.utils.fuse_conv_bn / --fuse-conv-bn)"
        )
    return QuantizedLayer(convs[0], None, w_cfg, qoutput=False)


class _QuantizedResidual(QuantizedBlock):
    """relu(residual(x) + shortcut(x)), then the block's output quantizer."""

    downsample: Optional[QuantizedLayer]

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.quantize_output(F.relu(self.residual(x) + identity))


class QuantizedBasicBlock(_QuantizedResidual):
    """ResNet BasicBlock: conv1+ReLU (quantized output), conv2, optional downsample conv, add, ReLU, output
    quantizer."""

    def __init__(
        self,
        block: nn.Module,
        w_cfg: QuantizerConfig,
        a_cfg: QuantizerConfig,
        layer_cfgs: Optional[LayerConfigs] = None,
    ):
        super().__init__(qoutput=True, a_cfg=a_cfg)
        cfgs = layer_cfgs or _same_for_every_layer(w_cfg, a_cfg)
        self.conv1 = QuantizedLayer(_fused_conv(block, "conv1", "bn1"), nn.ReLU(), *cfgs("conv1"))
        self.conv2 = QuantizedLayer(_fused_conv(block, "conv2", "bn2"), None, cfgs("conv2")[0], qoutput=False)
        self.downsample = _downsample(block, cfgs("downsample")[0])

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class QuantizedBottleneck(_QuantizedResidual):
    """ResNet Bottleneck: conv1+ReLU, conv2+ReLU (both quantized), conv3, optional downsample conv, add, ReLU,
    output quantizer."""

    def __init__(
        self,
        block: nn.Module,
        w_cfg: QuantizerConfig,
        a_cfg: QuantizerConfig,
        layer_cfgs: Optional[LayerConfigs] = None,
    ):
        super().__init__(qoutput=True, a_cfg=a_cfg)
        cfgs = layer_cfgs or _same_for_every_layer(w_cfg, a_cfg)
        self.conv1 = QuantizedLayer(_fused_conv(block, "conv1", "bn1"), nn.ReLU(), *cfgs("conv1"))
        self.conv2 = QuantizedLayer(_fused_conv(block, "conv2", "bn2"), nn.ReLU(), *cfgs("conv2"))
        self.conv3 = QuantizedLayer(_fused_conv(block, "conv3", "bn3"), None, cfgs("conv3")[0], qoutput=False)
        self.downsample = _downsample(block, cfgs("downsample")[0])

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))

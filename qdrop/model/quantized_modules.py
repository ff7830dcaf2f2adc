"""Quantized building blocks of a detector: one conv/linear layer, and the two ResNet residual blocks.

A `QuantizedLayer` or `QuantizedBlock` is one unit of block reconstruction. Its output is quantized once, at the
end (after the ReLU, when the unit has one), which is where the next unit's input is quantized in deployment.
"""
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from qdrop.quantization import ActivationQuantizer, WeightQuantizer


class QuantizedLayer(nn.Module):
    """A Conv2d or Linear whose weight is fake-quantized, with an optional ReLU and output quantizer.

    `relu=True` folds a ReLU that follows the layer in the float model: the ReLU runs before the output quantizer so
    the quantization range only covers non-negative values. The model's own ReLU may stay in place after this layer:
    a ReLU of a quantized non-negative tensor changes nothing.
    """

    def __init__(self, module: nn.Module, w_qconfig: Mapping, a_qconfig: Mapping, relu: bool = False,
                 quantize_output: bool = True):
        super().__init__()
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"QuantizedLayer wraps nn.Conv2d or nn.Linear, got {type(module).__name__}")
        self.module = module
        self.relu = relu
        self.w_qconfig = dict(w_qconfig)
        self.a_qconfig = dict(a_qconfig) if quantize_output else None
        self.weight_quantizer = WeightQuantizer(self.w_qconfig)
        self.output_quantizer: Optional[nn.Module] = ActivationQuantizer(self.a_qconfig) if quantize_output else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_quantizer(self.module.weight)
        if isinstance(self.module, nn.Conv2d):
            out = self.module._conv_forward(x, weight, self.module.bias)
        else:
            out = F.linear(x, weight, self.module.bias)
        if self.relu:
            out = F.relu(out)
        if self.output_quantizer is not None:
            out = self.output_quantizer(out)
        return out

    def extra_repr(self) -> str:
        return f"relu={self.relu}, quantize_output={self.output_quantizer is not None}"


class QuantizedBlock(nn.Module):
    """Base of the residual blocks: inner layers, then `add`, ReLU and a single output quantizer."""

    def __init__(self, a_qconfig: Mapping):
        super().__init__()
        self.a_qconfig = dict(a_qconfig)
        self.output_quantizer = ActivationQuantizer(self.a_qconfig)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.residual(x) + identity)
        return self.output_quantizer(out)


def _fused_conv(block: nn.Module, conv_name: str, bn_name: str) -> nn.Conv2d:
    """The conv `conv_name` of `block`, checking that its BatchNorm `bn_name` has been folded into it."""
    bn = getattr(block, bn_name, None)
    if bn is not None and not isinstance(bn, nn.Identity):
        raise ValueError(f"{type(block).__name__}.{bn_name} is a {type(bn).__name__}: fold BatchNorm into the convs "
                         "(mmdet.utils.fuse_conv_bn / --fuse-conv-bn) before quantizing")
    return getattr(block, conv_name)


def _downsample_conv(block: nn.Module) -> Optional[nn.Conv2d]:
    downsample = block.downsample
    if downsample is None:
        return None
    convs = [m for m in downsample if isinstance(m, nn.Conv2d)]
    others = [m for m in downsample if not isinstance(m, (nn.Conv2d, nn.Identity))]
    if len(convs) != 1 or others:
        raise ValueError(f"downsample branch {downsample} must be one conv with its BatchNorm folded "
                         "(mmdet.utils.fuse_conv_bn / --fuse-conv-bn)")
    return convs[0]


class QuantizedBasicBlock(QuantizedBlock):
    """ResNet BasicBlock: conv1+ReLU (quantized output), conv2, optional downsample conv, add, ReLU, output quantizer."""

    def __init__(self, block: nn.Module, w_qconfig: Mapping, a_qconfig: Mapping):
        super().__init__(a_qconfig)
        self.conv1 = QuantizedLayer(_fused_conv(block, "conv1", "bn1"), w_qconfig, a_qconfig, relu=True)
        self.conv2 = QuantizedLayer(_fused_conv(block, "conv2", "bn2"), w_qconfig, a_qconfig, quantize_output=False)
        ds_conv = _downsample_conv(block)
        self.downsample = None if ds_conv is None else QuantizedLayer(ds_conv, w_qconfig, a_qconfig,
                                                                      quantize_output=False)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class QuantizedBottleneck(QuantizedBlock):
    """ResNet Bottleneck: conv1+ReLU, conv2+ReLU (both quantized), conv3, optional downsample conv, add, ReLU,
    output quantizer."""

    def __init__(self, block: nn.Module, w_qconfig: Mapping, a_qconfig: Mapping):
        super().__init__(a_qconfig)
        self.conv1 = QuantizedLayer(_fused_conv(block, "conv1", "bn1"), w_qconfig, a_qconfig, relu=True)
        self.conv2 = QuantizedLayer(_fused_conv(block, "conv2", "bn2"), w_qconfig, a_qconfig, relu=True)
        self.conv3 = QuantizedLayer(_fused_conv(block, "conv3", "bn3"), w_qconfig, a_qconfig, quantize_output=False)
        ds_conv = _downsample_conv(block)
        self.downsample = None if ds_conv is None else QuantizedLayer(ds_conv, w_qconfig, a_qconfig,
                                                                      quantize_output=False)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))

"""Quantized modules.

Words used throughout the package:

* layer: one conv or linear with a fake-quantized weight, its folded activation (ReLU or none) and, optionally, an
  output quantizer (`QuantizedLayer`);
* block: several layers computed together, e.g. a residual block (subclasses of `QuantizedBlock`);
* unit: what reconstruction optimises at once, a layer or a block (`QuantizedUnit`, the base of both). A unit may
  sit inside another (a block's layers); the outermost ones are reconstructed.
"""

from collections.abc import Mapping
from typing import Any, Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .builders import ActivationQuantizer, QuantizerConfig, WeightQuantizer

QuantizerSettings = Union[QuantizerConfig, Mapping[str, Any]]


class QConv2d(nn.Conv2d):
    """nn.Conv2d whose weight passes through ``weight_fake_quant``; keeps ``weight``/``bias`` names."""

    def __init__(self, conv: nn.Conv2d, w_cfg: QuantizerSettings):
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        self.weight = conv.weight
        self.bias = conv.bias
        self.weight_fake_quant = WeightQuantizer(w_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)


class QLinear(nn.Linear):
    """nn.Linear whose weight passes through ``weight_fake_quant``; keeps ``weight``/``bias`` names."""

    def __init__(self, linear: nn.Linear, w_cfg: QuantizerSettings):
        super().__init__(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_fake_quant = WeightQuantizer(w_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_fake_quant(self.weight), self.bias)


def weight_quantized(module: nn.Module, w_cfg: QuantizerSettings) -> Union[QConv2d, QLinear]:
    """The weight-quantized counterpart of a conv or linear, sharing its parameters.

    Args:
        module: an ``nn.Conv2d`` or ``nn.Linear``.
        w_cfg: the weight quantizer's settings (``w_qconfig``).

    Returns:
        A ``QConv2d`` or ``QLinear`` holding ``module``'s ``weight`` and ``bias`` and a new ``weight_fake_quant``.
    """
    if isinstance(module, nn.Conv2d):
        return QConv2d(module, w_cfg)
    if isinstance(module, nn.Linear):
        return QLinear(module, w_cfg)
    raise ValueError(f"weight_quantized: cannot quantize {type(module).__name__}; allowed types: nn.Conv2d, nn.Linear")


class QuantizedUnit(nn.Module):
    """Base of every layer and block: an optional output quantizer ``block_post_act_fake_quantize``.

    Subclasses compute their output ``out`` and return ``self.quantize_output(out)``.
    """

    def __init__(self, qoutput: bool = True, a_cfg: Optional[QuantizerSettings] = None):
        super().__init__()
        self.qoutput = qoutput
        if qoutput:
            if a_cfg is None:
                raise ValueError(f"{type(self).__name__}: qoutput=True needs an a_qconfig (a_cfg)")
            self.block_post_act_fake_quantize = ActivationQuantizer(a_cfg)

    def quantize_output(self, out: Tensor) -> Tensor:
        return self.block_post_act_fake_quantize(out) if self.qoutput else out


class QuantizedLayer(QuantizedUnit):
    """A weight-quantized conv/linear (``module``), its folded ``activation`` (ReLU or None) and, if ``qoutput``,
    an output quantizer."""

    def __init__(
        self,
        module: nn.Module,
        activation: Optional[nn.Module],
        w_cfg: QuantizerSettings,
        a_cfg: Optional[QuantizerSettings] = None,
        qoutput: bool = True,
    ):
        super().__init__(qoutput, a_cfg)
        self.module = weight_quantized(module, w_cfg)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        if self.activation is not None:
            out = self.activation(out)
        return self.quantize_output(out)


class QuantizedBlock(QuantizedUnit):
    """Base of the blocks (e.g. residual blocks): several `QuantizedLayer`s computed together and reconstructed as
    one unit; the output quantizer, if any, sits after the block's last operation."""

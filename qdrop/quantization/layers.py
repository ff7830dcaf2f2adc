"""Quantized modules.

Words used throughout the package:

* layer: one conv, transposed conv or linear with a fake-quantized weight, its folded activation (ReLU or none)
  and, optionally, an output quantizer (`QuantizedLayer`);
* block: several layers computed together, e.g. a residual block (subclasses of `QuantizedBlock`);
* unit: what reconstruction optimises at once, a layer or a block (`QuantizedUnit`, the base of both). A unit may
  sit inside another (a block's layers); the outermost ones are reconstructed.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .builders import ActivationQuantizer, QuantizerConfig, WeightQuantizer

QuantizerSettings = Union[QuantizerConfig, Mapping[str, Any]]


class QConv2d(nn.Conv2d):
    """nn.Conv2d whose weight passes through ``weight_fake_quant``; keeps ``weight``/``bias`` names."""

    OUTPUT_CHANNEL_AXIS = 0  # of the (out, in / groups, kh, kw) weight

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


class QConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d whose weight passes through ``weight_fake_quant``; keeps ``weight``/``bias`` names.

    Its weight is laid out (in, out / groups, kh, kw), so the output channels run along axis 1. A q_config's
    per-output-channel weight setting (``ch_axis: 0``, the output-channel axis of a conv's (out, in, kh, kw) weight)
    therefore builds this layer's quantizer with ``ch_axis`` 1 (``OUTPUT_CHANNEL_AXIS``): one scale per output
    channel; a per-tensor setting stays per tensor. A grouped transposed conv holds only out / groups channels on
    axis 1, so it is quantized per tensor only.
    """

    OUTPUT_CHANNEL_AXIS = 1

    def __init__(self, conv: nn.ConvTranspose2d, w_cfg: QuantizerSettings):
        cfg = QuantizerConfig.from_mapping(w_cfg, "w_qconfig")
        if cfg.ch_axis not in (-1, 0):
            raise ValueError(
                f"QConvTranspose2d: w_qconfig.ch_axis {cfg.ch_axis}; allowed values: -1 (per tensor), 0 (per output "
                "channel, axis 1 of the transposed conv's weight)"
            )
        if cfg.ch_axis == 0 and conv.groups != 1:
            raise ValueError(
                f"QConvTranspose2d: a grouped ConvTranspose2d (groups={conv.groups}) holds out / groups channels on "
                "its weight's axis 1 and cannot be quantized per output channel; use ch_axis -1 (per tensor)"
            )
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            output_padding=conv.output_padding,
            groups=conv.groups,
            bias=conv.bias is not None,
            dilation=conv.dilation,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        self.weight = conv.weight
        self.bias = conv.bias
        if cfg.ch_axis == 0:
            cfg = dataclasses.replace(cfg, ch_axis=self.OUTPUT_CHANNEL_AXIS)
        self.weight_fake_quant = WeightQuantizer(cfg)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(
            x,
            self.weight_fake_quant(self.weight),
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )


class QLinear(nn.Linear):
    """nn.Linear whose weight passes through ``weight_fake_quant``; keeps ``weight``/``bias`` names."""

    OUTPUT_CHANNEL_AXIS = 0  # of the (out, in) weight

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


# The weight-quantized layer types: their quantizer is ``weight_fake_quant``, their output channels run along
# ``OUTPUT_CHANNEL_AXIS`` of the weight.
WEIGHT_QUANTIZED_TYPES = (QConv2d, QConvTranspose2d, QLinear)
WeightQuantizedModule = Union[QConv2d, QConvTranspose2d, QLinear]


def weight_quantized(module: nn.Module, w_cfg: QuantizerSettings) -> WeightQuantizedModule:
    """The weight-quantized counterpart of a conv, transposed conv or linear, sharing its parameters.

    Args:
        module: an ``nn.Conv2d``, ``nn.ConvTranspose2d`` or ``nn.Linear``.
        w_cfg: the weight quantizer's settings (``w_qconfig``; ``ch_axis`` 0 means per output channel, which is
            axis 1 of a transposed conv's weight).

    Returns:
        A ``QConv2d``, ``QConvTranspose2d`` or ``QLinear`` holding ``module``'s ``weight`` and ``bias`` and a new
        ``weight_fake_quant``.
    """
    if isinstance(module, nn.Conv2d):
        return QConv2d(module, w_cfg)
    if isinstance(module, nn.ConvTranspose2d):
        return QConvTranspose2d(module, w_cfg)
    if isinstance(module, nn.Linear):
        return QLinear(module, w_cfg)
    raise ValueError(
        f"weight_quantized: cannot quantize {type(module).__name__}; allowed types: nn.Conv2d, nn.ConvTranspose2d, "
        "nn.Linear"
    )


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
    """A weight-quantized conv/transposed conv/linear (``module``), its folded ``activation`` (ReLU or None) and, if
    ``qoutput``, an output quantizer."""

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

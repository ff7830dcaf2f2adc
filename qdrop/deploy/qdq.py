"""A fake quantizer's parameters as ONNX QuantizeLinear/DequantizeLinear data: integer types, zero points and the
integer weights (AdaRound's learned rounding where it has one, round-to-nearest otherwise)."""

from dataclasses import dataclass

import numpy as np
import torch

from qdrop.quantization import AdaRoundFakeQuantize, FakeQuantizeBase

# ONNX integer element types by (width, signed): name, the type's own range. Widths up to 4 use the 4-bit types
# (opset 21), widths 5..8 the 8-bit ones.
INTEGER_TYPES = {
    (4, True): ("INT4", (-8, 7)),
    (4, False): ("UINT4", (0, 15)),
    (8, True): ("INT8", (-128, 127)),
    (8, False): ("UINT8", (0, 255)),
}
MIN_OPSET_4BIT = 21
MIN_OPSET_PER_AXIS = 13


@dataclass(frozen=True)
class QuantParams:
    """What one QuantizeLinear/DequantizeLinear pair needs.

    ``scale`` and ``zero_point`` have one entry (per tensor) or one per channel along ``axis``; ``onnx_type`` is the
    integer element type and ``type_range`` its saturation range, which may be wider than ``quant_range`` (2- and
    3-bit tensors in INT4/UINT4, 5- to 7-bit ones in INT8/UINT8).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    quant_range: tuple[int, int]
    onnx_type: str
    type_range: tuple[int, int]

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def needs_clip(self) -> bool:
        return self.quant_range != self.type_range


def integer_type(bit: int, symmetric: bool) -> tuple[str, tuple[int, int]]:
    """(ONNX type name, its range) holding ``bit``-bit values: INT4/UINT4 up to 4 bits, INT8/UINT8 up to 8."""
    if not 2 <= bit <= 8:
        raise ValueError(f"bit: got {bit}; ONNX export supports 2..8-bit quantizers")
    return INTEGER_TYPES[(4 if bit <= 4 else 8, symmetric)]


def quant_params(quantizer: FakeQuantizeBase, name: str, channels_axis: int) -> QuantParams:
    """The quantizer's learned scale and (rounded) zero point as float32/int arrays.

    Args:
        quantizer: a calibrated fake quantizer.
        name: its qualified name, for error messages.
        channels_axis: the tensor axis its per-channel parameters run along in the exported graph.
    """
    scale = quantizer.scale.detach().float().cpu().reshape(-1).numpy().astype(np.float32)
    zero_point = torch.round(quantizer.zero_point.detach().float().cpu().reshape(-1)).numpy().astype(np.int64)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(
            f"{name}: scale must be finite and positive to export, got min {scale.min()} (is the model calibrated?)"
        )
    qmin, qmax = quantizer.quant_min, quantizer.quant_max
    if np.any(zero_point < qmin) or np.any(zero_point > qmax):
        raise ValueError(
            f"{name}: zero point outside its range [{qmin}, {qmax}]: {zero_point.min()}..{zero_point.max()}"
        )
    onnx_type, type_range = integer_type(quantizer.bit, quantizer.symmetric)
    return QuantParams(scale, zero_point, channels_axis, (qmin, qmax), onnx_type, type_range)


def integer_weight(
    weight: torch.Tensor, quantizer: FakeQuantizeBase, name: str, channel_axis: int = 0
) -> tuple[np.ndarray, QuantParams]:
    """The weight as the integers its fake quantizer maps it to, with per-output-channel parameters along
    ``channel_axis`` (0 for conv and linear weights, 1 for a transposed conv's (in, out, kh, kw) weight).

    AdaRound quantizers with a learned ``alpha`` use clamp(floor(w / s) + (alpha >= 0) + z, qmin, qmax); every
    other quantizer rounds to nearest: clamp(round(w / s) + z, qmin, qmax). A per-tensor scale is repeated for
    every output channel, which dequantizes to the same values.

    Args:
        weight: float weight with its output channels on ``channel_axis``.
        quantizer: its calibrated weight quantizer.
        name: the quantizer's qualified name, for error messages.
        channel_axis: the weight's output-channel axis; a per-channel quantizer must run along it.

    Returns:
        (int64 array of values in [qmin, qmax], weight's shape; the per-channel parameters on ``channel_axis``).
    """
    params = quant_params(quantizer, name, channels_axis=channel_axis)
    if params.per_channel and quantizer.ch_axis != channel_axis:
        raise ValueError(
            f"{name}: per-channel weight quantizers must run along the weight's output channels (axis "
            f"{channel_axis}) to export, got ch_axis {quantizer.ch_axis}"
        )
    channels = weight.shape[channel_axis]
    shape = [1] * weight.dim()
    shape[channel_axis] = channels  # broadcast over the other axes
    scale = torch.from_numpy(np.broadcast_to(params.scale, (channels,)).copy()).reshape(shape)
    zero_point = torch.from_numpy(np.broadcast_to(params.zero_point, (channels,)).copy()).reshape(shape).float()
    w = weight.detach().float().cpu()
    learned = isinstance(quantizer, AdaRoundFakeQuantize) and quantizer.adaround and quantizer.alpha is not None
    if learned:
        rounded = torch.floor(w / scale) + (quantizer.alpha.detach().cpu() >= 0).float()
    else:
        rounded = torch.round(w / scale)
    qmin, qmax = params.quant_range
    ints = torch.clamp(rounded + zero_point, qmin, qmax).to(torch.int64).numpy()
    per_channel = QuantParams(
        scale.reshape(-1).numpy(),
        zero_point.reshape(-1).numpy().astype(np.int64),
        channel_axis,
        params.quant_range,
        params.onnx_type,
        params.type_range,
    )
    return ints, per_channel

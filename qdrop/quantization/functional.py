"""Fake-quantization ops written as plain differentiable torch expressions (any device, no custom kernels).

All ops compute ``(clamp(round(x / s) + z, qmin, qmax) - z) * s``. ``scale``/``zero_point`` are either
one-element tensors (per tensor) or 1-D tensors with one entry per channel along ``ch_axis``.
"""

import torch
from torch import Tensor

CACHE_BLOCK = 1 << 17  # elements per block of element-wise chains whose temporaries should stay in cache
_KEEP_DRAW_LEVELS = 1 << 31  # int32 random_() draws uniformly from [0, 2**31)


def draw_keep(x: Tensor, drop_prob: float) -> Tensor:
    """Where QDrop keeps the quantized element: True with probability ``drop_prob``, independently per element.

    One uniform 31-bit integer per element, kept below ``drop_prob * 2**31`` (the probability in steps of
    2**-31); on the CPU this costs a fraction of ``torch.rand_like(x) < drop_prob``. Draws from torch's default
    generator of ``x``'s device, so ``torch.manual_seed`` fixes the masks.

    Args:
        x: the tensor being quantized, any shape.
        drop_prob: probability of keeping the quantized element, in [0, 1].

    Returns:
        bool, x's shape and device.
    """
    if drop_prob >= 1.0:
        return torch.ones(x.shape, dtype=torch.bool, device=x.device)
    threshold = min(round(drop_prob * _KEEP_DRAW_LEVELS), _KEEP_DRAW_LEVELS - 1)
    draws = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_()
    return draws < threshold


def round_ste(x: Tensor) -> Tensor:
    """Round to nearest; the gradient passes straight through. The forward value is exactly ``round(x)``."""
    return x.round().detach() + (x - x.detach())


def grad_scale(x: Tensor, factor: float) -> Tensor:
    """Identity in the forward pass (exactly); multiplies the gradient by ``factor``."""
    scaled = x * factor
    return x.detach() + (scaled - scaled.detach())


def broadcast_qparam(param: Tensor, x: Tensor, ch_axis: int) -> Tensor:
    """Shape a per-tensor or per-channel parameter so it broadcasts against ``x``.

    Args:
        param: (1,) per tensor, or (C,) with C = ``x.shape[ch_axis]``.
        x: the tensor to quantize, any shape.
        ch_axis: -1 per tensor, else the channel axis of ``x``.

    Returns:
        A 0-d tensor per tensor, else ``param`` viewed as (1, .., C, .., 1) with C on ``ch_axis``.
    """
    if ch_axis < 0 or param.numel() == 1:
        return param.reshape(())
    if ch_axis >= x.dim():
        raise ValueError(f"ch_axis={ch_axis} is out of range for a {x.dim()}-d input")
    if param.numel() != x.shape[ch_axis]:
        raise ValueError(f"{param.numel()} quantization parameters for {x.shape[ch_axis]} channels on axis {ch_axis}")
    shape = [1] * x.dim()
    shape[ch_axis] = -1
    return param.reshape(shape)  # (1, .., C, .., 1)


def fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int, ch_axis: int = -1
) -> Tensor:
    """Fake quantization with fixed ``scale``/``zero_point`` and straight-through rounding.

    Args:
        x: the tensor to quantize, any shape.
        scale, zero_point: (1,) per tensor, or (C,) per channel along ``ch_axis``.
        quant_min, quant_max: the integer grid.
        ch_axis: -1 per tensor, else the channel axis of ``x``.

    Returns:
        The fake-quantized tensor, shaped as ``x``.
    """
    s = broadcast_qparam(scale, x, ch_axis)
    z = broadcast_qparam(zero_point, x, ch_axis)
    return (torch.clamp(round_ste(x / s) + z, quant_min, quant_max) - z) * s


def lsq_grad_factor(x: Tensor, quant_max: int, ch_axis: int = -1) -> float:
    """LSQ gradient factor 1 / sqrt(elements per scale * qmax)."""
    per_scale = x.numel() if ch_axis < 0 else x.numel() / x.shape[ch_axis]
    return 1.0 / (per_scale * quant_max) ** 0.5


def fake_quantize_lsq(
    x: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int, ch_axis: int = -1
) -> Tensor:
    """LSQ: learnable ``scale`` whose gradient is scaled by :func:`lsq_grad_factor`; ``zero_point`` is fixed.

    Arguments and result as :func:`fake_quantize`.
    """
    factor = lsq_grad_factor(x, quant_max, ch_axis)
    s = broadcast_qparam(grad_scale(scale, factor), x, ch_axis)
    z = broadcast_qparam(zero_point.detach(), x, ch_axis)
    return (torch.clamp(round_ste(x / s) + z, quant_min, quant_max) - z) * s


def fake_quantize_lsq_plus(
    x: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int, ch_axis: int = -1
) -> Tensor:
    """LSQ+: learnable ``scale`` and ``zero_point``; the zero point is rounded straight-through and
    both gradients are scaled by :func:`lsq_grad_factor`.

    Arguments and result as :func:`fake_quantize`.
    """
    factor = lsq_grad_factor(x, quant_max, ch_axis)
    s = broadcast_qparam(grad_scale(scale, factor), x, ch_axis)
    z = broadcast_qparam(grad_scale(round_ste(zero_point), factor), x, ch_axis)
    return (torch.clamp(round_ste(x / s) + z, quant_min, quant_max) - z) * s


def quant_range(bit: int, symmetric: bool) -> tuple[int, int]:
    """Integer range: asymmetric [0, 2^b - 1], symmetric [-2^(b-1), 2^(b-1) - 1]."""
    if symmetric:
        return -(2 ** (bit - 1)), 2 ** (bit - 1) - 1
    return 0, 2**bit - 1

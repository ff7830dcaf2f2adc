"""Fused fake quantization: the ops of :mod:`qdrop.quantization.functional` with their gradients computed in the
forward pass, so that the backward pass is one multiply (input) and one reduction (per scale / zero point).

The forward output is bit-identical to the plain ops (same float operations in the same order); the gradients
equal theirs up to float rounding. The drop mask (keep the quantized element with probability ``drop_prob``) is
drawn inside the fused op by the plain path's :func:`~qdrop.quantization.functional.draw_keep`, from the same
random numbers, and applied as a 0/1 float mask, which on CPU costs a fraction of ``torch.where`` with a boolean
mask.

Each fake quantizer takes the fused path when its ``fast`` attribute is set: the q_config's ``recon.fast`` sets it
on every quantizer of a model (``qdrop.quantization.set_fast_path``), so calibration, reconstruction and evaluation
follow one switch; ``QDROP_FAST=0`` in the environment only changes its default.
"""

import os
from functools import cache
from typing import Optional

import torch
from torch import Tensor

from .functional import CACHE_BLOCK, broadcast_qparam, draw_keep

FAST_ENV = "QDROP_FAST"


def default_fast_path() -> bool:
    """The default of the fast-path switch (`recon.fast`, each quantizer's `fast`): on, unless ``QDROP_FAST=0``."""
    return os.environ.get(FAST_ENV, "1") != "0"


@cache
def _inner_bounds(low: float, high: float) -> tuple[float, float]:
    """The float32 neighbours of ``low`` and ``high`` inside [low, high]."""
    low_t, high_t = torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)
    return float(torch.nextafter(low_t, high_t)), float(torch.nextafter(high_t, low_t))


def _strictly_inside(values: Tensor, low: float, high: float, out: Tensor) -> Tensor:
    """Float 0/1 mask, 1 where low < values < high: where ``torch.clamp(values, low, high)`` passes its gradient.
    Clamping to the float32 neighbours inside [low, high] leaves exactly those values unchanged. ``out`` must be
    another tensor of values' shape."""
    if out is values:
        raise ValueError("_strictly_inside: out must not be the values tensor itself")
    torch.clamp(values, *_inner_bounds(float(low), float(high)), out=out)
    return torch.eq(out, values, out=out)


def _reduce_to(grad_terms: Tensor, param: Tensor) -> Tensor:
    """Sum ``grad_terms`` over every dim where the broadcast ``param`` has size 1; the result has param's shape."""
    if param.dim() == 0:
        return grad_terms.sum()
    dims = [d for d in range(grad_terms.dim()) if param.shape[d] == 1]
    return grad_terms.sum(dims, keepdim=True)


def draw_keep_mask(x: Tensor, drop_prob: float) -> Tensor:
    """Float 0/1 mask, 1 where the quantized element is kept: ``draw_keep(x, drop_prob)`` as a float mask, from
    the same random numbers.

    Args:
        x: the tensor being quantized, any shape.
        drop_prob: probability of keeping the quantized element.
    Returns:
        mask with x's shape, dtype float32 on x's device (x's dtype when x is floating point).
    """
    return draw_keep(x, drop_prob).to(x.dtype if x.is_floating_point() else torch.float32)


def _mix_into(quantized: Tensor, full_precision: Tensor, keep: Tensor) -> Tensor:
    """``torch.where(keep == 1, quantized, full_precision)`` for a 0/1 float ``keep`` and finite inputs, exactly
    (``quantized * keep + full_precision * (1 - keep)``), written into ``quantized``."""
    return quantized.mul_(keep).addcmul_(full_precision, torch.rsub(keep, 1.0))


def mix(quantized: Tensor, full_precision: Tensor, drop_prob: float) -> Tensor:
    """Keep each element of ``quantized`` with probability ``drop_prob``, else take ``full_precision``'s; the same
    draw and result as ``torch.where(draw_keep(quantized, drop_prob), quantized, full_precision)``."""
    if drop_prob >= 1.0:
        return quantized
    keep = draw_keep_mask(quantized, drop_prob)
    return torch.addcmul(quantized * keep, full_precision, torch.rsub(keep, 1.0))


class _FakeQuantizeFn(torch.autograd.Function):
    """out = (clamp(round(x / s) + z, qmin, qmax) - z) * s with straight-through rounding, optionally mixed with x
    by a keep mask. "Inside" is qmin < round(x / s) + z < qmax, where torch.clamp passes gradients (a value on a
    bound gets none). Gradients: x gets g where the element was quantized inside or not quantized at all;
    s gets factor * sum(g * keep * ((clamp(.) - z) - inside * x / s)); z gets -factor * s * sum(g * keep * outside).
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        scale: Tensor,
        zero_point: Tensor,
        quant_min: int,
        quant_max: int,
        grad_factor: float,
        keep: Optional[Tensor],
    ) -> Tensor:
        need_scale_grad = ctx.needs_input_grad[1]
        t = x / scale
        level = torch.round(t).add_(zero_point)  # round(x / s) + z
        clamped = torch.clamp(level, quant_min, quant_max)
        pass_grad = _strictly_inside(level, quant_min, quant_max, out=torch.empty_like(level))
        del level
        clamped.sub_(zero_point)  # clamp(.) - z
        scale_terms = torch.addcmul(clamped, pass_grad, t, value=-1.0, out=t) if need_scale_grad else None
        out = clamped.mul_(scale)
        if keep is not None:
            out = _mix_into(out, x, keep)
            if scale_terms is not None:
                scale_terms.mul_(keep)
            pass_grad.mul_(keep).add_(torch.rsub(keep, 1.0))  # keep * inside + (1 - keep)
        # A copy of the scale: LSQ keeps its scale positive in place before every forward, and a unit may run the same
        # quantizer more than once per step (one call per group of same-shaped images).
        ctx.save_for_backward(scale.detach().clone(), pass_grad, scale_terms)
        ctx.grad_factor = grad_factor
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        scale, pass_grad, scale_terms = ctx.saved_tensors
        need_x, need_scale, need_zero_point = ctx.needs_input_grad[:3]
        grad_x = grad_scale = grad_zero_point = None
        passed = grad_out * pass_grad if need_x or need_zero_point else None
        if need_x:
            grad_x = passed
        if need_scale:
            grad_scale = _reduce_to(grad_out * scale_terms, scale) * ctx.grad_factor
        if need_zero_point:
            # d out / d z is -s outside the range (and where quantized), 0 inside: -s * (g - passed).
            grad_zero_point = (_reduce_to(passed, scale) - _reduce_to(grad_out, scale)) * scale * ctx.grad_factor
        return grad_x, grad_scale, grad_zero_point, None, None, None, None


def fused_fake_quantize(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    quant_min: int,
    quant_max: int,
    ch_axis: int = -1,
    grad_factor: float = 1.0,
    drop_prob: float = 1.0,
) -> Tensor:
    """Fake quantization of ``x`` then the drop mask, as ``fake_quantize``/``fake_quantize_lsq`` followed by
    ``torch.where(draw_keep(x, drop_prob), x_q, x)``.

    Args:
        x: input of any shape.
        scale: (1,) per tensor or (C,) per channel along ``ch_axis``; its gradient is multiplied by ``grad_factor``.
        zero_point: like ``scale``; used as given (round it first for LSQ+); its gradient is scaled likewise.
        quant_min, quant_max: the integer range.
        ch_axis: the channel axis of per-channel parameters, -1 per tensor.
        grad_factor: LSQ's gradient factor for scale and zero point (1.0 leaves them unscaled).
        drop_prob: probability of keeping each quantized element (1.0: all).
    Returns:
        tensor with x's shape.
    """
    s = broadcast_qparam(scale, x, ch_axis)
    z = broadcast_qparam(zero_point, x, ch_axis)
    keep = None
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad or zero_point.requires_grad)
    if not needs_grad:
        out = torch.div(x, s).round_().add_(z).clamp_(quant_min, quant_max).sub_(z).mul_(s)
        return out if drop_prob >= 1.0 else _mix_into(out, x, draw_keep_mask(x, drop_prob))
    # Quantizing draws no random numbers, so drawing the mask first gives the numbers the plain path draws after.
    keep = draw_keep_mask(x, drop_prob) if drop_prob < 1.0 else None
    return _FakeQuantizeFn.apply(x, s, z, quant_min, quant_max, grad_factor, keep)


def _row_blocks(t: Tensor) -> list:
    """Indices of ``t`` by blocks of whole rows (dim 0), about ``CACHE_BLOCK`` elements each; ``...`` if 0-d."""
    if t.dim() == 0:
        return [...]
    step = max(1, CACHE_BLOCK // max(1, t.numel() // max(t.shape[0], 1)))
    return [slice(start, start + step) for start in range(0, t.shape[0], step)]


def _rows_of(param: Tensor, rows) -> Tensor:
    """The part of a parameter broadcast against a weight that goes with the weight's ``rows``."""
    return param[rows] if param.dim() and param.shape[0] > 1 else param


class _AdaRoundSoftFn(torch.autograd.Function):
    """out = (clamp(floor(w / s) + h(alpha) + z, qmin, qmax) - z) * s, h = clamp(sigmoid(alpha) * (zeta - gamma) +
    gamma, 0, 1); alpha's gradient g * s * (zeta - gamma) * sigmoid'(alpha) where both clamps pass (strictly
    inside their bounds). Computed in blocks of rows, element by element as on the whole tensor."""

    @staticmethod
    def forward(
        ctx,
        alpha: Tensor,
        weight: Tensor,
        scale: Tensor,
        zero_point: Tensor,
        quant_min: int,
        quant_max: int,
        zeta: float,
        gamma: float,
    ) -> Tensor:
        out = torch.empty_like(weight)
        grad_alpha = torch.empty_like(alpha) if ctx.needs_input_grad[0] else None
        for rows in _row_blocks(weight):
            s, z = _rows_of(scale, rows), _rows_of(zero_point, rows)
            sig = torch.sigmoid(alpha[rows])
            h_raw = sig * (zeta - gamma) + gamma
            h = torch.clamp(h_raw, 0, 1)
            level = torch.floor(weight[rows] / s).add_(h).add_(z)
            clamped = torch.clamp(level, quant_min, quant_max)
            torch.mul(clamped.sub_(z), s, out=out[rows])
            if grad_alpha is not None:
                # sigmoid'(alpha) * (zeta - gamma) * s, zero where either clamp is active.
                grad = torch.rsub(sig, 1.0).mul_(sig).mul_(zeta - gamma).mul_(s)
                grad.mul_(_strictly_inside(h_raw, 0.0, 1.0, out=h))
                grad_alpha[rows] = grad.mul_(_strictly_inside(level, quant_min, quant_max, out=clamped))
        if grad_alpha is not None:
            ctx.save_for_backward(grad_alpha)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad_alpha,) = ctx.saved_tensors
        return grad_out * grad_alpha, None, None, None, None, None, None, None


def fused_adaround_soft(
    weight: Tensor,
    alpha: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    quant_min: int,
    quant_max: int,
    ch_axis: int,
    zeta: float,
    gamma: float,
) -> Tensor:
    """AdaRound's soft-rounded weight, as ``AdaRoundFakeQuantize.get_soft_value``, with one-multiply backward.

    Args:
        weight: (C_out, ...) weight; it gets no gradient (floor has none).
        alpha: rounding variables, weight's shape.
        scale, zero_point: (1,) or (C,) along ``ch_axis``.
    Returns:
        soft-quantized weight, weight's shape.
    """
    s = broadcast_qparam(scale, weight, ch_axis)
    z = broadcast_qparam(zero_point, weight, ch_axis)
    return _AdaRoundSoftFn.apply(alpha, weight.detach(), s.detach(), z.detach(), quant_min, quant_max, zeta, gamma)


def fused_adaround_hard(
    weight: Tensor, alpha: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int, ch_axis: int
) -> Tensor:
    """AdaRound's hard-rounded weight (rounded up where alpha >= 0), as ``get_hard_value``, computed in one buffer.
    Neither alpha nor the weight gets a gradient (floor and the comparison have none).

    Returns:
        hard-quantized weight, weight's shape.
    """
    s = broadcast_qparam(scale, weight, ch_axis)
    z = broadcast_qparam(zero_point, weight, ch_axis)
    up = (alpha >= 0).to(weight.dtype)
    return torch.div(weight.detach(), s.detach()).floor_().add_(up).add_(z).clamp_(quant_min, quant_max).sub_(z).mul_(s)


class _RoundLossFn(torch.autograd.Function):
    """sum(1 - |2h - 1|^b) with h = clamp(sigmoid(alpha) * (zeta - gamma) + gamma, 0, 1); alpha's gradient
    -2b |2h - 1|^(b - 1) sign(2h - 1) (zeta - gamma) sigmoid'(alpha) where the clamp passes."""

    @staticmethod
    def forward(ctx, alpha: Tensor, b: float, zeta: float, gamma: float) -> Tensor:
        terms = torch.empty_like(alpha)  # summed as one whole tensor at the end, as the plain path sums
        grad_alpha = torch.empty_like(alpha) if ctx.needs_input_grad[0] else None
        for rows in _row_blocks(alpha):
            sig = torch.sigmoid(alpha[rows])
            h_raw = sig * (zeta - gamma) + gamma
            centred = 2 * torch.clamp(h_raw, 0, 1) - 1
            distance = centred.abs()
            powered = distance.pow(b)
            torch.neg(powered, out=terms[rows]).add_(1)  # 1 - |2h - 1|^b, exactly
            if grad_alpha is not None:
                # |2h - 1|^(b - 1) as |2h - 1|^b / |2h - 1|, one power instead of two (at h = 1/2 the sign makes
                # it 0).
                slope = powered.div_(distance).nan_to_num_(nan=0.0)
                grad = slope.mul_(centred.sign_()).mul_(-2 * b * (zeta - gamma))
                grad.mul_(torch.rsub(sig, 1.0).mul_(sig))
                grad_alpha[rows] = grad.mul_(_strictly_inside(h_raw, 0.0, 1.0, out=centred))
        if grad_alpha is not None:
            ctx.save_for_backward(grad_alpha)
        return terms.sum()

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        (grad_alpha,) = ctx.saved_tensors
        return grad_alpha * grad_loss, None, None, None


def fused_round_loss(alpha: Tensor, b: float, zeta: float, gamma: float) -> Tensor:
    """AdaRound's regulariser sum(1 - |2h(alpha) - 1|^b), as ``AdaRoundFakeQuantize.round_loss``, with the gradient
    of alpha computed in the forward pass.

    Args:
        alpha: rounding variables, any shape.
        b: the exponent (> 1 during reconstruction).
    Returns:
        0-dim loss.
    """
    return _RoundLossFn.apply(alpha, float(b), zeta, gamma)

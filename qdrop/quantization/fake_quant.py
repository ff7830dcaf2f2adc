"""Fake quantizers: an observer, the quantization parameters derived from it, and the fake-quant op."""

import torch
from torch import Tensor, nn

from .functional import (
    broadcast_qparam,
    draw_keep,
    fake_quantize,
    fake_quantize_lsq,
    fake_quantize_lsq_plus,
    lsq_grad_factor,
    quant_range,
    round_ste,
)
from .fused import (
    default_fast_path,
    fused_adaround_hard,
    fused_adaround_soft,
    fused_fake_quantize,
    fused_round_loss,
    mix,
)
from .observers.observer import ObserverBase

ROUND_MODES = ("learned_hard_sigmoid",)


class FakeQuantizeBase(nn.Module):
    """Built as ``(observer_cls, bit=8, symmetric=False, ch_axis=-1)``.

    While the observer is enabled every input is observed and ``scale``/``zero_point`` are recomputed from it.
    ``drop_prob`` p < 1 keeps each quantized element with probability p and the full-precision one otherwise.
    """

    def __init__(self, observer_cls: type[ObserverBase], bit: int = 8, symmetric: bool = False, ch_axis: int = -1):
        super().__init__()
        self.bit = bit
        self.symmetric = symmetric
        self.ch_axis = ch_axis
        self.quant_min, self.quant_max = quant_range(bit, symmetric)
        self.activation_post_process = observer_cls(bit=bit, symmetric=symmetric, ch_axis=ch_axis)
        self.observer_enabled = True
        self.fake_quant_enabled = True
        self.drop_prob = 1.0
        self.fast = default_fast_path()  # the fused path (same forward values); `set_fast_path` switches a model

    def extra_repr(self) -> str:
        return (
            f"bit={self.bit}, symmetric={self.symmetric}, ch_axis={self.ch_axis}, "
            f"observer_enabled={self.observer_enabled}, fake_quant_enabled={self.fake_quant_enabled}"
        )

    def enable_observer(self, enabled: bool = True) -> None:
        self.observer_enabled = enabled

    def disable_observer(self) -> None:
        self.enable_observer(False)

    def enable_fake_quant(self, enabled: bool = True) -> None:
        self.fake_quant_enabled = enabled

    def disable_fake_quant(self) -> None:
        self.enable_fake_quant(False)

    def set_qparams_from_observer(self) -> None:
        """Set ``scale`` and ``zero_point`` from the observer's current range (their shapes follow the observer's:
        (1,) per tensor, (C,) per channel)."""
        observer = self.activation_post_process
        scale, zero_point = observer.calculate_qparams(observer.min_val, observer.max_val)
        with torch.no_grad():
            for name, value in (("scale", scale), ("zero_point", zero_point)):
                current = getattr(self, name)
                value = value.reshape(-1).to(device=current.device, dtype=current.dtype)
                if current.shape != value.shape:
                    current.data = value.clone()
                else:
                    current.copy_(value)

    def _quantize(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _quantize_fused(self, x: Tensor) -> Tensor:
        """``_quantize`` and the drop mask on the fused path (same forward values, same random numbers)."""
        return mix(self._quantize(x), x, self.drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.observer_enabled:
            self.activation_post_process(x.detach())
            self.set_qparams_from_observer()
        if not self.fake_quant_enabled:
            return x
        if x.dtype != torch.float32 and torch.is_autocast_enabled(x.device.type):
            x = x.float()  # under autocast the convolutions run in low precision, the quantizers in float32
        if self.fast:
            return self._quantize_fused(x)
        x_q = self._quantize(x)
        if self.drop_prob < 1.0:
            x_q = torch.where(draw_keep(x, self.drop_prob), x_q, x)
        return x_q

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        for name in ("scale", "zero_point"):
            key = prefix + name
            current = getattr(self, name)
            if key in state_dict and state_dict[key].shape != current.shape:
                current.data = torch.empty(state_dict[key].shape, dtype=current.dtype, device=current.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class FixedFakeQuantize(FakeQuantizeBase):
    """Scale and zero point fixed by the observer (buffers)."""

    def __init__(self, observer_cls: type[ObserverBase], bit: int = 8, symmetric: bool = False, ch_axis: int = -1):
        super().__init__(observer_cls, bit, symmetric, ch_axis)
        self.register_buffer("scale", torch.tensor([1.0]))
        self.register_buffer("zero_point", torch.tensor([0.0]))

    def _quantize(self, x: Tensor) -> Tensor:
        return fake_quantize(x, self.scale, self.zero_point, self.quant_min, self.quant_max, self.ch_axis)

    def _quantize_fused(self, x: Tensor) -> Tensor:
        return fused_fake_quantize(
            x, self.scale, self.zero_point, self.quant_min, self.quant_max, self.ch_axis, drop_prob=self.drop_prob
        )


class LSQFakeQuantize(FakeQuantizeBase):
    """Learnable scale (LSQ) with its gradient scaled by 1 / sqrt(elements per scale * qmax)."""

    def __init__(self, observer_cls: type[ObserverBase], bit: int = 8, symmetric: bool = False, ch_axis: int = -1):
        super().__init__(observer_cls, bit, symmetric, ch_axis)
        self.scale = nn.Parameter(torch.tensor([1.0]))
        self.register_buffer("zero_point", torch.tensor([0.0]))

    def keep_scale_positive(self) -> None:
        """scale <- max(|scale|, float32 eps); called on every quantizing forward and when the observer stops."""
        with torch.no_grad():
            self.scale.abs_().clamp_(min=torch.finfo(torch.float32).eps)

    def enable_observer(self, enabled: bool = True) -> None:
        super().enable_observer(enabled)
        if not enabled:
            self.keep_scale_positive()

    def _quantize(self, x: Tensor) -> Tensor:
        self.keep_scale_positive()
        return fake_quantize_lsq(x, self.scale, self.zero_point, self.quant_min, self.quant_max, self.ch_axis)

    def _quantize_fused(self, x: Tensor) -> Tensor:
        self.keep_scale_positive()
        return fused_fake_quantize(
            x,
            self.scale,
            self.zero_point.detach(),
            self.quant_min,
            self.quant_max,
            self.ch_axis,
            lsq_grad_factor(x, self.quant_max, self.ch_axis),
            self.drop_prob,
        )


class LSQPlusFakeQuantize(LSQFakeQuantize):
    """LSQ+: learnable scale and zero point (rounded straight-through)."""

    def __init__(self, observer_cls: type[ObserverBase], bit: int = 8, symmetric: bool = False, ch_axis: int = -1):
        super().__init__(observer_cls, bit, symmetric, ch_axis)
        del self.zero_point
        self.zero_point = nn.Parameter(torch.tensor([0.0]))

    def _quantize(self, x: Tensor) -> Tensor:
        self.keep_scale_positive()
        return fake_quantize_lsq_plus(x, self.scale, self.zero_point, self.quant_min, self.quant_max, self.ch_axis)

    def _quantize_fused(self, x: Tensor) -> Tensor:
        self.keep_scale_positive()
        return fused_fake_quantize(
            x,
            self.scale,
            round_ste(self.zero_point),
            self.quant_min,
            self.quant_max,
            self.ch_axis,
            lsq_grad_factor(x, self.quant_max, self.ch_axis),
            self.drop_prob,
        )


class AdaRoundFakeQuantize(FixedFakeQuantize):
    """AdaRound for weights: after calibration ``init(weight, round_mode)`` creates ``alpha``; then the weight is
    rounded with the learned rectified sigmoid (``soft_targets=True``) or with ``alpha >= 0`` (hard)."""

    zeta = 1.1
    gamma = -0.1

    def __init__(self, observer_cls: type[ObserverBase], bit: int = 8, symmetric: bool = False, ch_axis: int = -1):
        super().__init__(observer_cls, bit, symmetric, ch_axis)
        self.register_parameter("alpha", None)
        self.adaround = False
        self.soft_targets = True
        self.round_mode = ROUND_MODES[0]

    def init(self, weight: Tensor, round_mode: str = "learned_hard_sigmoid") -> None:
        """Start ``alpha`` where the rectified sigmoid equals frac(w / s), and switch on learned rounding."""
        if round_mode not in ROUND_MODES:
            raise ValueError(f"round_mode: unknown value {round_mode!r}; allowed values: {', '.join(ROUND_MODES)}")
        self.round_mode = round_mode
        with torch.no_grad():
            w = weight.detach() / self._scale_for(weight)
            rest = w - torch.floor(w)
            alpha = -torch.log((self.zeta - self.gamma) / (rest - self.gamma) - 1)
        self.alpha = nn.Parameter(alpha)
        self.adaround = True
        self.soft_targets = True

    def _scale_for(self, x: Tensor) -> Tensor:
        return broadcast_qparam(self.scale, x, self.ch_axis)

    def rectified_sigmoid(self) -> Tensor:
        """h(alpha) = clamp(sigmoid(alpha) * (zeta - gamma) + gamma, 0, 1)."""
        if self.alpha is None:
            raise RuntimeError("AdaRoundFakeQuantize.init(weight, round_mode) has not been called")
        return torch.clamp(torch.sigmoid(self.alpha) * (self.zeta - self.gamma) + self.gamma, 0, 1)

    def _rounded(self, weight: Tensor, rounding: Tensor) -> Tensor:
        s = self._scale_for(weight)
        z = broadcast_qparam(self.zero_point, weight, self.ch_axis)
        return (torch.clamp(torch.floor(weight / s) + rounding + z, self.quant_min, self.quant_max) - z) * s

    def get_soft_value(self, weight: Tensor) -> Tensor:
        return self._rounded(weight, self.rectified_sigmoid())

    def get_hard_value(self, weight: Tensor) -> Tensor:
        if self.alpha is None:
            raise RuntimeError("AdaRoundFakeQuantize.init(weight, round_mode) has not been called")
        return self._rounded(weight, (self.alpha >= 0).to(weight.dtype))

    def round_loss(self, b: float) -> Tensor:
        """AdaRound's regulariser sum(1 - |2h - 1| ** b)."""
        if self.fast and self.alpha is not None:
            return fused_round_loss(self.alpha, b, self.zeta, self.gamma)
        return (1 - (2 * self.rectified_sigmoid() - 1).abs().pow(b)).sum()

    def _quantize(self, x: Tensor) -> Tensor:
        if not self.adaround:
            return super()._quantize(x)
        return self.get_soft_value(x) if self.soft_targets else self.get_hard_value(x)

    def _quantize_fused(self, x: Tensor) -> Tensor:
        if not self.adaround:
            return super()._quantize_fused(x)
        if self.alpha is None:
            raise RuntimeError("AdaRoundFakeQuantize.init(weight, round_mode) has not been called")
        if self.soft_targets:
            x_q = fused_adaround_soft(
                x,
                self.alpha,
                self.scale,
                self.zero_point,
                self.quant_min,
                self.quant_max,
                self.ch_axis,
                self.zeta,
                self.gamma,
            )
        else:
            x_q = fused_adaround_hard(
                x, self.alpha, self.scale, self.zero_point, self.quant_min, self.quant_max, self.ch_axis
            )
        return mix(x_q, x, self.drop_prob)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "alpha"
        if key in state_dict:
            # A checkpoint with alpha holds learned rounding: use it, hard-rounded as after reconstruction.
            if self.alpha is None or self.alpha.shape != state_dict[key].shape:
                device = self.scale.device
                self.alpha = nn.Parameter(torch.empty(state_dict[key].shape, device=device))
            self.adaround = True
            self.soft_targets = False
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

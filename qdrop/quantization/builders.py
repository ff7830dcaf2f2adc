"""Quantizer settings (one ``a_qconfig`` or ``w_qconfig`` section of a q_config) and the quantizers built from them."""

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Union

from mmdet.utils.errors import UserError

from . import fake_quant
from .fake_quant import FakeQuantizeBase
from .observers import observer

QUANTIZERS = ("FixedFakeQuantize", "LSQFakeQuantize", "LSQPlusFakeQuantize", "AdaRoundFakeQuantize")
OBSERVERS = (
    "MinMaxObserver",
    "AvgMinMaxObserver",
    "MSEObserver",
    "AvgMSEObserver",
    "MSEFastObserver",
    "AvgMSEFastObserver",
)
BIT_RANGE = (2, 8)


class QuantizerConfigError(UserError, ValueError):
    """A quantizer section (`a_qconfig`, `w_qconfig`, an override) names an unknown key, class or value."""


@dataclass(frozen=True)
class QuantizerConfig:
    """Which fake quantizer and observer quantize a tensor, with how many bits, and per tensor or per channel.

    Attributes:
        quantizer: class name in ``QUANTIZERS``.
        observer: class name in ``OBSERVERS``.
        bit: bits of the integer grid, ``BIT_RANGE[0]`` to ``BIT_RANGE[1]``.
        symmetric: signed grid centred on zero instead of an unsigned grid with a zero point.
        ch_axis: -1 for one scale per tensor, else the axis that has one scale per channel.
    """

    quantizer: str
    observer: str
    bit: int
    symmetric: bool
    ch_axis: int

    @classmethod
    def from_mapping(
        cls,
        cfg: Union["QuantizerConfig", Mapping[str, Any]],
        where: str = "qconfig",
    ) -> "QuantizerConfig":
        """Validate a mapping with the keys of ``QuantizerConfig``; errors name ``where``, the key and the allowed
        values. A ``QuantizerConfig`` is returned as it is."""
        if isinstance(cfg, QuantizerConfig):
            return cfg
        keys = [field.name for field in fields(cls)]
        if not isinstance(cfg, Mapping):
            raise QuantizerConfigError(f"{where}: expected a mapping with keys {keys}, got {type(cfg).__name__}")
        unknown = sorted(set(cfg) - set(keys))
        if unknown:
            raise QuantizerConfigError(f"{where}.{unknown[0]}: unknown key; allowed keys: {', '.join(keys)}")
        missing = [key for key in keys if key not in cfg]
        if missing:
            raise QuantizerConfigError(f"{where}.{missing[0]}: missing key; required keys: {', '.join(keys)}")
        if cfg["quantizer"] not in QUANTIZERS:
            raise QuantizerConfigError(
                f"{where}.quantizer: unknown value {cfg['quantizer']!r}; allowed values: {', '.join(QUANTIZERS)}"
            )
        if cfg["observer"] not in OBSERVERS:
            raise QuantizerConfigError(
                f"{where}.observer: unknown value {cfg['observer']!r}; allowed values: {', '.join(OBSERVERS)}"
            )
        bit = cfg["bit"]
        if isinstance(bit, bool) or not isinstance(bit, int) or not BIT_RANGE[0] <= bit <= BIT_RANGE[1]:
            raise QuantizerConfigError(
                f"{where}.bit: got {bit!r}; allowed values: integers {BIT_RANGE[0]}..{BIT_RANGE[1]}"
            )
        if not isinstance(cfg["symmetric"], bool):
            raise QuantizerConfigError(f"{where}.symmetric: got {cfg['symmetric']!r}; allowed values: true, false")
        ch_axis = cfg["ch_axis"]
        if isinstance(ch_axis, bool) or not isinstance(ch_axis, int) or ch_axis < -1:
            raise QuantizerConfigError(
                f"{where}.ch_axis: got {ch_axis!r}; allowed values: -1 (per tensor) or a channel axis >= 0"
            )
        return cls(**{key: cfg[key] for key in keys})

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: a plain dict with the q_config keys."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def build(self) -> FakeQuantizeBase:
        """A fresh fake quantizer with its observer, as configured."""
        quantizer_cls = getattr(fake_quant, self.quantizer)
        observer_cls = getattr(observer, self.observer)
        return quantizer_cls(observer_cls, bit=self.bit, symmetric=self.symmetric, ch_axis=self.ch_axis)


def ActivationQuantizer(cfg: Union[QuantizerConfig, Mapping[str, Any]]) -> FakeQuantizeBase:  # noqa: N802
    """Activation fake quantizer from an ``a_qconfig`` section (a ``QuantizerConfig`` or a mapping with its keys)."""
    return QuantizerConfig.from_mapping(cfg, "a_qconfig").build()


def WeightQuantizer(cfg: Union[QuantizerConfig, Mapping[str, Any]]) -> FakeQuantizeBase:  # noqa: N802
    """Weight fake quantizer from a ``w_qconfig`` section (a ``QuantizerConfig`` or a mapping with its keys)."""
    return QuantizerConfig.from_mapping(cfg, "w_qconfig").build()

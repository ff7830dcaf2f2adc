"""Finding the fake quantizers of a model, and switching their observers and fake quantization on and off by kind.

A weight quantizer is the ``weight_fake_quant`` of a `QConv2d`/`QConvTranspose2d`/`QLinear`; every other fake
quantizer quantizes an activation.
"""

from collections.abc import Iterator

from torch import nn

from .fake_quant import FakeQuantizeBase
from .layers import WEIGHT_QUANTIZED_TYPES, WeightQuantizedModule

KINDS = ("activation", "weight", "all")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown value {kind!r}; allowed values: {', '.join(KINDS)}")


def quantizer_kind(name: str) -> str:
    """'weight' for a quantizer registered as ``weight_fake_quant``, else 'activation'.

    Args:
        name: the quantizer's qualified module name, e.g. ``backbone.conv1.module.weight_fake_quant``.
    """
    return "weight" if name.split(".")[-1] == "weight_fake_quant" else "activation"


def fake_quantizers(model: nn.Module, kind: str = "all") -> Iterator[tuple[str, FakeQuantizeBase]]:
    """Every fake quantizer of ``kind`` below ``model``, in registration order.

    Args:
        model: any module.
        kind: 'activation', 'weight' or 'all'.

    Returns:
        An iterator of (qualified name, quantizer).
    """
    _check_kind(kind)
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantizeBase) and kind in ("all", quantizer_kind(name)):
            yield name, module


def weight_quantized_layers(model: nn.Module) -> Iterator[tuple[WeightQuantizedModule, FakeQuantizeBase]]:
    """Every weight-quantized conv/transposed conv/linear below ``model`` with its weight quantizer, in registration
    order.

    Returns:
        An iterator of (``QConv2d``, ``QConvTranspose2d`` or ``QLinear``, its ``weight_fake_quant``).
    """
    for module in model.modules():
        if isinstance(module, WEIGHT_QUANTIZED_TYPES):
            yield module, module.weight_fake_quant


def enable_calibration(model: nn.Module, kind: str = "all") -> None:
    """Quantizers of ``kind`` observe without quantizing; the others are switched off."""
    _check_kind(kind)
    for name, quantizer in fake_quantizers(model):
        quantizer.enable_observer(kind in ("all", quantizer_kind(name)))
        quantizer.disable_fake_quant()


def enable_quantization(model: nn.Module, kind: str = "all") -> None:
    """Quantizers of ``kind`` quantize with their current parameters (observers off); the others are off."""
    _check_kind(kind)
    for name, quantizer in fake_quantizers(model):
        quantizer.disable_observer()
        quantizer.enable_fake_quant(kind in ("all", quantizer_kind(name)))


def disable_all(model: nn.Module) -> None:
    """Every quantizer passes its input through untouched."""
    for _, quantizer in fake_quantizers(model):
        quantizer.disable_observer()
        quantizer.disable_fake_quant()


def set_fast_path(model: nn.Module, enabled: bool) -> None:
    """Every quantizer takes the fused path (``enabled``) or the plain one: same forward values, the gradients equal
    up to float rounding. `qdrop.model.quantize_detector` sets it from the q_config's ``recon.fast``."""
    for _, quantizer in fake_quantizers(model):
        quantizer.fast = bool(enabled)

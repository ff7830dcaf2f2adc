"""Switch observers and fake quantization on and off for a whole model, by quantizer kind."""
from typing import Iterator, Tuple

from torch import nn

from .fake_quant import FakeQuantizeBase

KINDS = ('activation', 'weight', 'all')


def is_weight_quantizer(name: str) -> bool:
    """Weight quantizers live under an attribute named ``weight_fake_quant``; every other one quantizes activations."""
    return name.split('.')[-1] == 'weight_fake_quant'


def fake_quantizers(model: nn.Module, kind: str = 'all') -> Iterator[Tuple[str, FakeQuantizeBase]]:
    """(name, quantizer) pairs of the given kind: 'activation', 'weight' or 'all'."""
    if kind not in KINDS:
        raise ValueError(f"kind: unknown value {kind!r}; allowed values: {', '.join(KINDS)}")
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantizeBase):
            if kind == 'all' or (kind == 'weight') == is_weight_quantizer(name):
                yield name, module


def enable_calibration(model: nn.Module, kind: str = 'all') -> None:
    """Quantizers of ``kind`` observe without quantizing; the others are switched off."""
    if kind not in KINDS:
        raise ValueError(f"kind: unknown value {kind!r}; allowed values: {', '.join(KINDS)}")
    for name, quantizer in fake_quantizers(model):
        selected = kind == 'all' or (kind == 'weight') == is_weight_quantizer(name)
        quantizer.enable_observer(selected)
        quantizer.disable_fake_quant()


def enable_quantization(model: nn.Module, kind: str = 'all') -> None:
    """Quantizers of ``kind`` quantize with their current parameters (observers off); the others are off."""
    if kind not in KINDS:
        raise ValueError(f"kind: unknown value {kind!r}; allowed values: {', '.join(KINDS)}")
    for name, quantizer in fake_quantizers(model):
        selected = kind == 'all' or (kind == 'weight') == is_weight_quantizer(name)
        quantizer.disable_observer()
        quantizer.enable_fake_quant(selected)


def disable_all(model: nn.Module) -> None:
    """Every quantizer passes its input through untouched."""
    for _, quantizer in fake_quantizers(model):
        quantizer.disable_observer()
        quantizer.disable_fake_quant()

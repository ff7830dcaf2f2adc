"""Sensitivity of a calibrated quantized detector, unit by unit: quantize one unit alone, the rest float, and
measure the damage.

The default damage is the relative output error of `extract_feat` (the neck's feature maps) on the calibration
images: sum over levels of the squared difference to the float features, divided by the sum of the squared float
features. It needs no labels and one forward per unit and image batch.
"""

from collections.abc import Callable, Sequence
from typing import Optional

import torch
from torch import nn

from qdrop.quantization import disable_all, enable_quantization

OUTPUT_ERROR = "output_error"
BBOX = "bbox"
METRICS = (OUTPUT_ERROR, BBOX)


def quantize_only(model: nn.Module, unit: Optional[nn.Module]) -> None:
    """Fake quantization on for `unit`'s quantizers alone (weights and activations), off everywhere else; None
    leaves the whole model float. Observers end up off."""
    disable_all(model)
    if unit is not None:
        enable_quantization(unit)


def _features(model: nn.Module, images: Sequence[torch.Tensor], device: torch.device) -> list[list[torch.Tensor]]:
    """extract_feat of every image batch: per batch, one (B, C, H, W) tensor per level."""
    with torch.no_grad():
        return [list(model.extract_feat(img.to(device))) for img in images]


class OutputError:
    """Relative squared error of a model's features against the float model's, on fixed image batches.

    Args:
        model: the quantized detector; its float features are taken now with every quantizer off.
        images: image batches (B, 3, H, W).
        device: where the batches run.
    """

    name = OUTPUT_ERROR

    def __init__(self, model: nn.Module, images: Sequence[torch.Tensor], device: torch.device):
        self.model, self.images, self.device = model, list(images), device
        quantize_only(model, None)
        self.reference = _features(model, self.images, device)
        self.energy = sum(level.double().pow(2).sum() for batch in self.reference for level in batch).item()
        if self.energy == 0:
            raise ValueError("the float features are all zero: the relative output error is undefined")

    def __call__(self) -> float:
        error = 0.0
        for batch, reference in zip(_features(self.model, self.images, self.device), self.reference):
            error += sum((level - target).double().pow(2).sum() for level, target in zip(batch, reference)).item()
        return error / self.energy


def unit_sensitivity(
    model: nn.Module,
    units: Sequence[tuple[str, nn.Module]],
    damage: Callable[[], float],
    on_unit: Optional[Callable[[int, str, float], None]] = None,
) -> list[dict]:
    """The damage of quantizing each unit alone.

    Args:
        model: a calibrated quantized detector; afterwards every quantizer quantizes again (observers off).
        units: (name, unit) pairs in forward order.
        damage: measures the model in its current state (higher: worse).
        on_unit: called with (index, unit name, score) after each unit, e.g. to show progress.

    Returns:
        [{"unit": name, "score": damage}, ...] in the order of `units`.
    """
    records = []
    try:
        for index, (name, unit) in enumerate(units):
            quantize_only(model, unit)
            score = float(damage())
            records.append({"unit": name, "score": score})
            if on_unit is not None:
                on_unit(index, name, score)
    finally:
        enable_quantization(model)
    return records


def top_units(records: Sequence[dict], count: int = 10) -> list[dict]:
    """The `count` records of highest score, highest first (ties keep forward order)."""
    return sorted(records, key=lambda record: -record["score"])[:count]

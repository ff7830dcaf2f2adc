"""Mixed precision from a sensitivity ranking: which units get more weight bits within an average-bit budget."""

from collections.abc import Mapping, Sequence

import yaml
from torch import nn

from qdrop.model import quantization_units
from qdrop.quantization import weight_quantized_layers


def unit_weight_counts(model: nn.Module) -> dict[str, int]:
    """Quantized weights per reconstruction unit of a quantized model.

    Returns:
        {unit name: number of weight elements under a weight quantizer}, in registration order.
    """
    return {
        name: sum(layer.weight.numel() for layer, _ in weight_quantized_layers(unit))
        for name, unit in quantization_units(model)
    }


def unit_weight_bits(model: nn.Module) -> dict[str, float]:
    """The weight bit width of every reconstruction unit, averaged over its weight elements (units without
    quantized weights get 0)."""
    bits = {}
    for name, unit in quantization_units(model):
        layers = list(weight_quantized_layers(unit))
        count = sum(layer.weight.numel() for layer, _ in layers)
        bits[name] = sum(q.bit * layer.weight.numel() for layer, q in layers) / count if count else 0.0
    return bits


def average_weight_bits(bits: Mapping[str, float], counts: Mapping[str, int]) -> float:
    """Weight bits averaged over every quantized weight element."""
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no quantized weights: the average bit width is undefined")
    return sum(bits[name] * count for name, count in counts.items()) / total


def suggest_overrides(
    scores: Sequence[Mapping], counts: Mapping[str, int], bits: Mapping[str, float], budget: float, high_bit: int
) -> list[dict]:
    """Raise the weights of the most damaging units to `high_bit` while the average stays within `budget`.

    Units are taken in order of decreasing score; each one that still fits the budget is raised, one that does not
    is passed over (a smaller, less sensitive unit after it may still fit). Units already at `high_bit` or above
    on average are left alone.

    Args:
        scores: [{"unit": name, "score": damage}, ...] (higher: more damage), any order.
        counts: weight elements per unit (`unit_weight_counts`).
        bits: the current weight bits per unit (`unit_weight_bits`).
        budget: the largest allowed average weight bit width over all quantized weights.
        high_bit: the bit width of the raised units.

    Returns:
        q_config `overrides:` entries, [{"modules": unit, "w_qconfig": {"bit": high_bit}}, ...], most sensitive
        first.
    """
    unknown = [record["unit"] for record in scores if record["unit"] not in counts or record["unit"] not in bits]
    if unknown:
        raise ValueError(f"scores name units the model does not have: {unknown[:5]}; units: {list(counts)[:5]}...")
    current = dict(bits)
    average = average_weight_bits(current, counts)
    if budget < average:
        raise ValueError(
            f"average weight-bit budget {budget}: below the {average:.3f} average weight bits the "
            "q_config already gives; allowed: a budget at or above it"
        )
    total = sum(counts.values())
    spent = average * total
    entries = []
    for record in sorted(scores, key=lambda r: r["score"], reverse=True):
        unit = record["unit"]
        extra = (high_bit - current[unit]) * counts[unit]
        if extra <= 0 or spent + extra > budget * total + 1e-9 * total:
            continue
        spent += extra
        current[unit] = high_bit
        entries.append({"modules": unit, "w_qconfig": {"bit": high_bit}})
    return entries


def format_overrides(entries: Sequence[Mapping]) -> str:
    """The entries as a q_config YAML block starting with `overrides:`."""
    return yaml.safe_dump({"overrides": [dict(entry) for entry in entries]}, sort_keys=False, default_flow_style=None)

"""The placement table: where every quantizer sits, what it quantizes and how, and which parts stay float and why."""

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from qdrop.model.errors import PlacementError
from qdrop.model.quantize import HEADS, KEPT_FLOAT, QUANTIZED_FORMS, TRUNK, lookup_by_type
from qdrop.quantization import QuantizedUnit, fake_quantizers, quantizer_kind

__all__ = [
    "PlacementError",
    "Placement",
    "FloatPart",
    "PlacementTable",
    "placement_table",
    "float_parts",
    "format_placement_table",
]

FLOAT_HEAD = "no quantized layer in the head (quant_head: False, the published default, or overrides)"
FLOAT_OVERRIDE = "kept float by the q_config's overrides (quantize: False)"


@dataclass(frozen=True)
class Placement:
    quantizer: str  # qualified module name of the quantizer
    tensor: str  # 'weight' or 'activation'
    bits: int
    granularity: str  # 'per-tensor' or 'per-channel (axis k)'
    quantizer_class: str
    observer_class: str
    module: str  # the layer or block that owns the quantizer: the names that q_config `overrides:` match
    symmetric: bool


@dataclass(frozen=True)
class FloatPart:
    """A part of the quantized detector's network that computes in float on purpose."""

    module: str  # qualified module name
    kind: str  # its type name
    reason: str


class PlacementTable(list):
    """The `Placement` rows (it is a list of them) and `float_parts`: the parts left float, with the reason."""

    def __init__(self, rows: Iterable[Placement] = (), float_parts: Iterable[FloatPart] = ()):
        super().__init__(rows)
        self.float_parts = tuple(float_parts)


def placement_table(model: nn.Module) -> PlacementTable:
    """One row per fake quantizer of `model`, in registration order, and the parts that stay float."""
    units = {name for name, module in model.named_modules() if isinstance(module, QuantizedUnit)}
    rows = []
    for name, quantizer in fake_quantizers(model):
        granularity = "per-tensor" if quantizer.ch_axis == -1 else f"per-channel (axis {quantizer.ch_axis})"
        parts = name.split(".")
        owner = next(
            (".".join(parts[:end]) for end in range(len(parts) - 1, 0, -1) if ".".join(parts[:end]) in units), ""
        )
        rows.append(
            Placement(
                name,
                quantizer_kind(name),
                quantizer.bit,
                granularity,
                type(quantizer).__name__,
                type(quantizer.activation_post_process).__name__,
                owner,
                quantizer.symmetric,
            )
        )
    return PlacementTable(rows, float_parts(model))


def float_parts(model: nn.Module) -> list[FloatPart]:
    """The parts of a quantized detector's backbone, neck and heads that compute in float, in registration order.

    A head without any quantized unit is one entry; inside the quantized parts: the types of `KEPT_FLOAT` (GroupNorm
    inside its unit, Scale, Integral) and the layers or blocks that `overrides:` keep float (`quantize: False`).
    A model without quantized units (a float detector) has none.
    """
    if not any(isinstance(module, QuantizedUnit) for module in model.modules()):
        return []
    found: list[FloatPart] = []
    for part in TRUNK + HEADS:
        module = getattr(model, part, None)
        if not isinstance(module, nn.Module):
            continue
        if part in HEADS and not any(isinstance(m, QuantizedUnit) for m in module.modules()):
            found.append(FloatPart(part, type(module).__name__, FLOAT_HEAD))
        else:
            _collect_float_parts(module, part, found)
    return found


def _collect_float_parts(parent: nn.Module, prefix: str, found: list[FloatPart]) -> None:
    for name, child in parent.named_children():
        qualified = f"{prefix}.{name}"
        if isinstance(child, QuantizedUnit):
            for inner_name, inner in child.named_modules(prefix=qualified):
                reason = lookup_by_type(KEPT_FLOAT, inner)
                if reason is not None:
                    found.append(FloatPart(inner_name, type(inner).__name__, reason))
        elif lookup_by_type(QUANTIZED_FORMS, child) is not None:
            found.append(FloatPart(qualified, type(child).__name__, FLOAT_OVERRIDE))
        elif lookup_by_type(KEPT_FLOAT, child) is not None:
            found.append(FloatPart(qualified, type(child).__name__, lookup_by_type(KEPT_FLOAT, child)))
        else:
            _collect_float_parts(child, qualified, found)


def format_placement_table(rows: list[Placement]) -> str:
    """The table of placement.txt: one line per quantizer, then (for a `PlacementTable`) one line per float part
    with tensor 'float', its type in the quantizer-class column and the reason last; a count closes it."""
    header = ("module", "quantizer", "tensor", "bits", "granularity", "symmetric", "quantizer class", "observer")
    cells = [header] + [
        (
            r.module,
            r.quantizer,
            r.tensor,
            str(r.bits),
            r.granularity,
            str(r.symmetric).lower(),
            r.quantizer_class,
            r.observer_class,
        )
        for r in rows
    ]
    floats = list(getattr(rows, "float_parts", ()))
    float_cells = [(p.module, "-", "float", "-", "-", "-", p.kind, p.reason) for p in floats]
    widths = [max(len(row[i]) for row in cells + float_cells) for i in range(len(header) - 1)]
    widths.append(max(len(row[-1]) for row in cells))  # a reason may run past the last column's width
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells + float_cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    n_weight = sum(r.tensor == "weight" for r in rows)
    count = f"{len(rows)} quantizers: {n_weight} weight, {len(rows) - n_weight} activation"
    if floats:
        count += f"; {len(floats)} parts kept float (tensor 'float')"
    lines.append(count)
    return "\n".join(lines)

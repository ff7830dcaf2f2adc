"""The placement table: where every quantizer sits, what it quantizes and how."""

from dataclasses import dataclass

from torch import nn

from qdrop.quantization import QuantizedUnit, fake_quantizers, quantizer_kind


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


def placement_table(model: nn.Module) -> list[Placement]:
    """One row per fake quantizer of `model`, in registration order."""
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
    return rows


def format_placement_table(rows: list[Placement]) -> str:
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
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    n_weight = sum(r.tensor == "weight" for r in rows)
    lines.append(f"{len(rows)} quantizers: {n_weight} weight, {len(rows) - n_weight} activation")
    return "\n".join(lines)

"""The placement table: where every quantizer sits, what it quantizes and how."""
from dataclasses import dataclass
from typing import List

from torch import nn

from qdrop.quantization import fake_quantizers, quantizer_kind


@dataclass(frozen=True)
class Placement:
    quantizer: str  # qualified module name of the quantizer
    tensor: str  # 'weight' or 'activation'
    bits: int
    granularity: str  # 'per-tensor' or 'per-channel (axis k)'
    quantizer_class: str
    observer_class: str


def placement_table(model: nn.Module) -> List[Placement]:
    """One row per fake quantizer of `model`, in registration order."""
    rows = []
    for name, quantizer in fake_quantizers(model):
        granularity = "per-tensor" if quantizer.ch_axis == -1 else f"per-channel (axis {quantizer.ch_axis})"
        rows.append(Placement(name, quantizer_kind(name), quantizer.bit, granularity, type(quantizer).__name__,
                              type(quantizer.activation_post_process).__name__))
    return rows


def format_placement_table(rows: List[Placement]) -> str:
    header = ("quantizer", "tensor", "bits", "granularity", "quantizer class", "observer")
    cells = [header] + [(r.quantizer, r.tensor, str(r.bits), r.granularity, r.quantizer_class, r.observer_class)
                        for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    n_weight = sum(r.tensor == "weight" for r in rows)
    lines.append(f"{len(rows)} quantizers: {n_weight} weight, {len(rows) - n_weight} activation")
    return "\n".join(lines)

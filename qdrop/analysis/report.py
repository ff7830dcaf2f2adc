"""The run report of a quantization run: `report.md` and its two figures, written into the work dir."""

import math
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import yaml

from mmdet.utils.atomic_io import atomic_write_text
from qdrop.analysis.plots import plot_recon_curves, plot_recon_errors
from qdrop.ptq.record import UnitReconstruction

REPORT_FILE = "report.md"
ERRORS_IMAGE = "recon_errors.png"
CURVES_IMAGE = "recon_curves.png"


@dataclass
class RunRecord:
    """Everything `report.md` shows about one run."""

    command: str
    q_config: Mapping  # the q_config in its YAML form
    placement: Sequence  # placement rows (qdrop.model.Placement)
    stage_seconds: Mapping[str, float] = field(default_factory=dict)
    peak_memory_mib: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    units: Sequence[UnitReconstruction] = ()
    placement_file: Optional[str] = None  # the full table beside the report, linked when given


def command_line(argv: Sequence[str]) -> str:
    """The command as a shell would take it back."""
    return " ".join(shlex.quote(arg) for arg in argv)


def write_run_report(work_dir: str, record: RunRecord) -> list[str]:
    """Draw the reconstruction figures (when matplotlib is installed and units were reconstructed) and write
    `report.md` linking them.

    Args:
        work_dir: folder that receives report.md, recon_errors.png and recon_curves.png.
        record: the run's facts.

    Returns:
        The paths written, report last.
    """
    written = []
    images, missing_note = [], None
    if record.units:
        try:
            names = [unit.unit for unit in record.units]
            plot_recon_errors(
                names,
                [u.error_before for u in record.units],
                [u.error_after for u in record.units],
                f"{work_dir}/{ERRORS_IMAGE}",
            )
            images.append(("Output error before and after reconstruction", ERRORS_IMAGE))
            curves = {unit.unit: unit.curve for unit in record.units if unit.curve}
            if curves:
                plot_recon_curves(curves, f"{work_dir}/{CURVES_IMAGE}")
                images.append(("Reconstruction loss over the steps", CURVES_IMAGE))
        except ImportError as error:
            missing_note = f"Figures not drawn: {error}."
        written += [f"{work_dir}/{image}" for _, image in images]
    report_path = f"{work_dir}/{REPORT_FILE}"
    atomic_write_text(report_path, format_report(record, images, missing_note))
    return written + [report_path]


def format_report(record: RunRecord, images: Sequence[tuple[str, str]] = (), note: Optional[str] = None) -> str:
    """report.md's text; `images` are (caption, file name relative to the report)."""
    lines = ["# Quantization run report", "", "Command:", "", "```", record.command, "```", ""]
    lines += ["## Metrics", ""]
    lines += (
        _table(("metric", "value"), [(key, _number(value)) for key, value in record.metrics.items()])
        if record.metrics
        else ["No metrics: the run did not evaluate."]
    )
    lines += ["", "## Time per stage", ""]
    total = sum(record.stage_seconds.values())
    lines += _table(
        ("stage", "seconds"),
        [(stage, f"{seconds:.1f}") for stage, seconds in record.stage_seconds.items()] + [("total", f"{total:.1f}")],
    )
    lines += ["", "## Peak memory", ""]
    lines += _table(("memory", "MiB"), [(kind, f"{mib:.0f}") for kind, mib in record.peak_memory_mib.items()])
    lines += ["", "## Placement", ""] + placement_summary(record.placement)
    if record.placement_file:
        lines += ["", f"Every quantizer: [{record.placement_file}]({record.placement_file})."]
    lines += ["", "## Reconstruction", ""]
    if record.units:
        for caption, image in images:
            lines += [f"![{caption}]({image})", ""]
        if note:
            lines.append(note)
        lines.append("")
        lines += _table(
            ("unit", "output error before", "after", "after / before"),
            [(u.unit, _number(u.error_before), _number(u.error_after), _ratio(u)) for u in record.units],
        )
    else:
        lines.append("No unit was reconstructed in this run.")
    lines += [
        "",
        "## q_config",
        "",
        "```yaml",
        yaml.safe_dump(_plain(record.q_config), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def placement_summary(rows: Sequence) -> list[str]:
    """Markdown lines: how many quantizers of each kind (tensor, bits, granularity, classes) and, for a
    `qdrop.model.PlacementTable`, which kinds of part stay float and why."""
    if not rows:
        return ["No quantizer in the model."]
    counts: dict[tuple, int] = Counter(
        (row.tensor, row.bits, row.granularity, row.quantizer_class, row.observer_class) for row in rows
    )
    n_weight = sum(row.tensor == "weight" for row in rows)
    lines = [f"{len(rows)} quantizers: {n_weight} weight, {len(rows) - n_weight} activation.", ""]
    lines += _table(
        ("tensor", "bits", "granularity", "quantizer", "observer", "count"),
        [(*map(str, key), str(count)) for key, count in counts.items()],
    )
    float_parts = getattr(rows, "float_parts", ())
    if float_parts:
        kinds: dict[tuple, int] = Counter((part.kind, part.reason) for part in float_parts)
        lines += ["", f"Kept float: {len(float_parts)} parts.", ""]
        lines += _table(
            ("part", "count", "why"), [(kind, str(count), reason) for (kind, reason), count in kinds.items()]
        )
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _ratio(unit: UnitReconstruction) -> str:
    if unit.error_before == 0 or math.isnan(unit.error_before) or math.isnan(unit.error_after):
        return "-"
    return f"{unit.error_after / unit.error_before:.3f}"


def _plain(value):
    """Mappings, sequences and tuples as plain dicts and lists, for yaml.safe_dump."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value

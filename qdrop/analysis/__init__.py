"""What quantization did to a detector: figures, the run report, sensitivity-guided mixed precision.

The figures need matplotlib (pip install -e .[analysis]); everything else works without it.
"""

from .mixed_precision import (
    average_weight_bits,
    format_overrides,
    suggest_overrides,
    unit_weight_bits,
    unit_weight_counts,
)
from .report import RunRecord, command_line, format_report, write_run_report
from .resources import StageTimer, peak_memory_mib

__all__ = [
    "RunRecord",
    "command_line",
    "format_report",
    "write_run_report",
    "StageTimer",
    "peak_memory_mib",
    "unit_weight_counts",
    "unit_weight_bits",
    "average_weight_bits",
    "suggest_overrides",
    "format_overrides",
]

"""Detector -> quantized detector: which modules get which quantizers, and saving/reloading the result."""

from .checkpoint import (
    is_quantized_checkpoint,
    is_quantized_checkpoint_file,
    load_quantized_checkpoint,
    load_quantized_state,
    quantized_state_dict,
    save_quantized_checkpoint,
)
from .conv_norm import QuantizedConvNormAct
from .errors import PlacementError
from .placement import FloatPart, Placement, PlacementTable, float_parts, format_placement_table, placement_table
from .quantize import quantization_units, quantize_detector
from .resnet_blocks import QuantizedBasicBlock, QuantizedBottleneck

__all__ = [
    "QuantizedBasicBlock",
    "QuantizedBottleneck",
    "QuantizedConvNormAct",
    "PlacementError",
    "quantize_detector",
    "quantization_units",
    "Placement",
    "PlacementTable",
    "FloatPart",
    "placement_table",
    "float_parts",
    "format_placement_table",
    "quantized_state_dict",
    "load_quantized_state",
    "save_quantized_checkpoint",
    "load_quantized_checkpoint",
    "is_quantized_checkpoint",
    "is_quantized_checkpoint_file",
]

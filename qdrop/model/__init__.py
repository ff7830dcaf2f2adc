"""Detector -> quantized detector: which modules get which quantizers, and saving/reloading the result."""

from .checkpoint import (
    is_quantized_checkpoint,
    is_quantized_checkpoint_file,
    load_quantized_checkpoint,
    load_quantized_state,
    quantized_state_dict,
    save_quantized_checkpoint,
)
from .placement import Placement, format_placement_table, placement_table
from .quantize import quantization_units, quantize_detector
from .resnet_blocks import QuantizedBasicBlock, QuantizedBottleneck

__all__ = [
    "QuantizedBasicBlock",
    "QuantizedBottleneck",
    "quantize_detector",
    "quantization_units",
    "Placement",
    "placement_table",
    "format_placement_table",
    "quantized_state_dict",
    "load_quantized_state",
    "save_quantized_checkpoint",
    "load_quantized_checkpoint",
    "is_quantized_checkpoint",
    "is_quantized_checkpoint_file",
]

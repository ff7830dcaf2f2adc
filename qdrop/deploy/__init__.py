"""Deployment: the quantized detector as ONNX graphs with QuantizeLinear/DequantizeLinear, run in ONNX Runtime.

Needs the `deploy` extra (``pip install -e .[deploy]``: onnx, onnxruntime); importing this package does not.
"""

from .dependencies import INSTALL_HINT, import_onnx, import_onnxruntime
from .export import (
    BOX_HEAD,
    DEFAULT_OPSET,
    MASK_HEAD,
    NETWORK,
    box_head_part,
    box_head_path,
    export_detector,
    graph_parts,
    graph_path,
    is_two_stage,
    save_graphs,
)
from .qdq import QuantParams, integer_type, integer_weight, quant_params
from .runtime import GraphHead, OnnxDetector, OnnxGraphError, create_session, roi_head_on_graphs, session_options

__all__ = [
    "INSTALL_HINT",
    "import_onnx",
    "import_onnxruntime",
    "BOX_HEAD",
    "DEFAULT_OPSET",
    "MASK_HEAD",
    "NETWORK",
    "box_head_part",
    "box_head_path",
    "export_detector",
    "graph_parts",
    "graph_path",
    "is_two_stage",
    "save_graphs",
    "QuantParams",
    "integer_type",
    "integer_weight",
    "quant_params",
    "GraphHead",
    "OnnxDetector",
    "OnnxGraphError",
    "create_session",
    "roi_head_on_graphs",
    "session_options",
]

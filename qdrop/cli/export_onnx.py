"""Export a detector checkpoint (quantized.pth from qdrop/solver/quant_coco.py, or a float one) to ONNX.

    python tools/deploy/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx [--shape H W] [--opset 21]
        [--require-quantized]

Every activation quantizer becomes QuantizeLinear -> DequantizeLinear; every quantized weight is stored as integers
(INT4/UINT4 up to 4 bits, INT8/UINT8 above) with a per-channel DequantizeLinear. Faster R-CNN also writes
FILE.bbox_head.onnx (the RoI box head). Without --shape, height and width are dynamic.
"""

import argparse

from mmdet.utils import load_config
from qdrop.deploy import DEFAULT_OPSET, export_detector, save_graphs
from qdrop.solver.command import add_debug_flag, run_command
from qdrop.solver.detector import load_detector
from qdrop.solver.preflight import check_model_types


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export a (quantized) detector to ONNX with QDQ nodes")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="quantized.pth from quant_coco.py, or a float checkpoint")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.add_argument(
        "--shape", nargs=2, type=int, metavar=("H", "W"), help="fixed input height and width (default: dynamic)"
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}; INT4/UINT4 need 21)"
    )
    parser.add_argument(
        "--require-quantized", action="store_true", help="refuse a float checkpoint instead of exporting a float graph"
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.shape is not None and min(args.shape) <= 0:
        parser.error(f"--shape: height and width must be positive, got {args.shape}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config)
    check_model_types(cfg, args.config)
    model, quantized, _ = load_detector(cfg, args.checkpoint, kind="quantized" if args.require_quantized else "any")
    graphs = export_detector(model, opset=args.opset, shape=args.shape)
    files = save_graphs(graphs, args.out)
    for part, path in files.items():
        print(f"{graph_kind(graphs[part])} {part} graph written to {path}")
    return files


def graph_kind(graph) -> str:
    """'quantized (QDQ)' for a graph with quantize/dequantize nodes, else 'float' (e.g. heads left float)."""
    has_qdq = any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.graph.node)
    return "quantized (QDQ)" if has_qdq else "float"


def cli() -> int:
    return run_command(main)

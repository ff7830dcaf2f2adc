"""Export a detector checkpoint (quantized.pth from qdrop/solver/quant_coco.py, or a float one) to ONNX.

    python tools/deploy/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx [--shape H W] [--opset 21]
        [--require-quantized]

Every activation quantizer becomes QuantizeLinear -> DequantizeLinear; every quantized weight is stored as integers
(INT4/UINT4 up to 4 bits, INT8/UINT8 above) with a per-channel DequantizeLinear. Faster R-CNN also writes
FILE.bbox_head.onnx (the RoI box head). Without --shape, height and width are dynamic.
"""

import argparse

from qdrop.deploy import DEFAULT_OPSET, export_detector, load_detector, save_graphs


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
    args = parser.parse_args(argv)
    if args.shape is not None and min(args.shape) <= 0:
        parser.error(f"--shape: height and width must be positive, got {args.shape}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    model, quantized = load_detector(args.config, args.checkpoint, require_quantized=args.require_quantized)
    graphs = export_detector(model, opset=args.opset, shape=args.shape)
    files = save_graphs(graphs, args.out)
    kind = "quantized (QDQ)" if quantized else "float"
    for part, path in files.items():
        print(f"{kind} {part} graph written to {path}")
    return files


if __name__ == "__main__":
    main()

"""ONNX Runtime latency of the R50-FPN detectors' networks: float export against a W8A8 QDQ export.

Random weights (BatchNorm folded); the W8A8 model's activation ranges come from calibration on random images (no
reconstruction: speed does not depend on it). Weights are 8-bit symmetric per output channel (INT8), activations
8-bit asymmetric per tensor (UINT8), heads included (`quant_head`). ONNX Runtime (CPU, all graph optimizations) fuses
DequantizeLinear -> Conv -> QuantizeLinear into integer kernels; the optimized graph is saved and its integer convs
(QLinearConv, ConvInteger) counted. Float and W8A8 runs alternate; the median of the repeats is printed, then the
share of the W8A8 run's kernel time per op type (one profiled run).

    python benchmarks/onnx_runtime.py --threads 2 --repeats 5 [--models retinanet faster_rcnn]
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from mmdet.models import build_detector
from mmdet.utils import fuse_conv_bn, load_config
from qdrop.deploy import NETWORK, create_session, export_detector, import_onnx, session_options
from qdrop.deploy.dependencies import import_onnxruntime
from qdrop.deploy.runtime import PROVIDERS, disabled_optimizers
from qdrop.model import quantize_detector
from qdrop.quantization import enable_calibration, enable_quantization
from timing import time_interleaved

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "retinanet": "configs/retinanet/retinanet_r50_fpn_2x_coco.py",
    "faster_rcnn": "configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py",
}
W8A8 = dict(
    a_qconfig=dict(quantizer="FixedFakeQuantize", observer="MinMaxObserver", bit=8, symmetric=False, ch_axis=-1),
    w_qconfig=dict(quantizer="FixedFakeQuantize", observer="MinMaxObserver", bit=8, symmetric=True, ch_axis=0),
    calibrate=2,
    quant_head=True,
    recon=dict(
        batch_size=1,
        scale_lr=4.0e-5,
        warm_up=0.2,
        weight=0.01,
        iters=0,
        b_range=[20, 2],
        keep_gpu=False,
        round_mode="learned_hard_sigmoid",
        drop_prob=1.0,
    ),
)
INTEGER_CONVS = ("QLinearConv", "ConvInteger")


def float_detector(config: str) -> torch.nn.Module:
    cfg = load_config(str(REPO_ROOT / config))
    cfg.model.backbone.init_cfg = None
    cfg.model.pop("pretrained", None)
    torch.manual_seed(0)
    return fuse_conv_bn(build_detector(cfg.model).eval())


def w8a8_detector(config: str, images: list) -> torch.nn.Module:
    model = float_detector(config)
    quantize_detector(model, W8A8)
    enable_calibration(model)
    with torch.no_grad():
        for img in images:
            model.extract_feat(img)
    enable_quantization(model)
    return model


def optimized_op_counts(model_proto, threads: int, folder: str, name: str) -> dict:
    """Op types of the graph ONNX Runtime actually runs (all optimizations applied), counted."""
    path = str(Path(folder) / f"{name}_optimized.onnx")
    create_session(model_proto, "all", threads, optimized_model_path=path)
    counts: dict = {}
    for node in import_onnx().load(path).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def kernel_time_shares(model_proto, feed: dict, threads: int, folder: str, name: str) -> dict:
    """Share of one profiled run's kernel time per op type, largest first (ONNX Runtime's own profiler)."""
    ort = import_onnxruntime()
    options = session_options("all", threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(folder) / name)
    session = ort.InferenceSession(
        model_proto.SerializeToString(),
        options,
        providers=PROVIDERS,
        disabled_optimizers=disabled_optimizers(model_proto),  # as create_session, which the timed runs use
    )
    session.run(None, feed)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    totals: dict = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op_type = event["args"]["op_name"]
            totals[op_type] = totals.get(op_type, 0) + event["dur"]
    whole = sum(totals.values())
    return {op: duration / whole for op, duration in sorted(totals.items(), key=lambda item: -item[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["retinanet", "faster_rcnn"])
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1216)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(1, 3, args.height, args.width, generator=generator) for _ in range(2)]
    feed = {"img": images[0].numpy().astype(np.float32)}
    print(f"ONNX Runtime CPU, {args.threads} threads, input {args.height}x{args.width}, median of {args.repeats}")
    print(f"{'model':<12} {'float ms':>9} {'W8A8 ms':>9} {'speed-up':>9} {'integer convs':>14} {'float convs':>12}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            graphs = {
                "float": export_detector(float_detector(CONFIGS[name]))[NETWORK],
                "W8A8": export_detector(w8a8_detector(CONFIGS[name], images))[NETWORK],
            }
            sessions = {kind: create_session(graph, "all", args.threads) for kind, graph in graphs.items()}
            runs = {kind: (lambda s=session: s.run(None, feed)) for kind, session in sessions.items()}
            times = time_interleaved(runs, warmup=args.warmup, repeats=args.repeats, reduce=statistics.median)
            counts = optimized_op_counts(graphs["W8A8"], args.threads, folder, name)
            integer = sum(counts.get(op, 0) for op in INTEGER_CONVS)
            float_convs = counts.get("Conv", 0) + counts.get("FusedConv", 0) + counts.get("NchwcConv", 0)
            print(
                f"{name:<12} {times['float'] * 1e3:>9.0f} {times['W8A8'] * 1e3:>9.0f} "
                f"{times['float'] / times['W8A8']:>8.2f}x {integer:>14} {float_convs:>12}"
            )
            shares = kernel_time_shares(graphs["W8A8"], feed, args.threads, folder, name)
            print(
                f"{'':<12} W8A8 kernel time by op: "
                + ", ".join(f"{op} {share:.0%}" for op, share in shares.items() if share >= 0.01)
            )


if __name__ == "__main__":
    main()

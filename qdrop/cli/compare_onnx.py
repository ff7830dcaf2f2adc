"""Compare an exported detector with its checkpoint on test images: the largest difference of every raw output.

    python tools/deploy/compare_onnx.py CONFIG CHECKPOINT FILE.onnx [--images 2] [--optimization disable all]

For each ONNX Runtime optimization level, prints per output max |ONNX - PyTorch|, the largest |PyTorch| value, and
the difference in steps (scale) of the model's last activation quantizer, and how many elements differ by more than
one step. The inputs are the first test images through the config's test pipeline. For every image whose network
outputs differ by more than a step, it names the first activation quantizer where the graph and the model part ways
and whether the split elements sat on rounding ties (float summation order) or not (an export error).
"""

import argparse

from mmdet.apis.inference import prepare_test_config
from mmdet.datasets import build_dataloader, build_dataset
from mmdet.utils import load_config
from qdrop.deploy import NETWORK, OnnxDetector, import_onnx
from qdrop.deploy.compare import OutputDifference, QuantizerProbe, compare_outputs, last_activation_quantizer
from qdrop.deploy.runtime import OPTIMIZATION_LEVELS
from qdrop.solver.command import add_debug_flag, run_command
from qdrop.solver.detector import build_bare_detector, load_detector
from qdrop.solver.preflight import check_model_types


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Raw outputs of an ONNX detector against its PyTorch checkpoint")
    parser.add_argument("config", help="config file of the exported detector")
    parser.add_argument("checkpoint", help="the checkpoint the graph was exported from")
    parser.add_argument("onnx", help="network graph from tools/deploy/export_onnx.py")
    parser.add_argument("--images", type=int, default=2, help="number of test images compared (default 2)")
    parser.add_argument(
        "--optimization",
        nargs="+",
        choices=OPTIMIZATION_LEVELS,
        default=["disable", "all"],
        help="ONNX Runtime graph optimization levels to compare (default: disable all)",
    )
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.images <= 0:
        parser.error(f"--images: must be positive, got {args.images}")
    return args


def main(argv=None) -> dict:
    """Returns {optimization level: {output name: OutputDifference over the compared images}}."""
    args = parse_args(argv)
    cfg = prepare_test_config(load_config(args.config))
    check_model_types(cfg, args.config)
    dataset = build_dataset(cfg.data.test)
    loader = build_dataloader(dataset, samples_per_gpu=1, workers_per_gpu=0, dist=False, shuffle=False)
    model = load_detector(cfg, args.checkpoint).model
    last = last_activation_quantizer(model)
    step = last[1] if last else 0.0
    step_note = f"last activation quantizer {last[0]}, step {step:.6g}" if last else "float model: no quantizer"
    print(f"{args.onnx} against {args.checkpoint} on {min(args.images, len(dataset))} test image(s); {step_note}")
    network_graph = import_onnx().load(args.onnx) if last else None
    worst = {}
    for level in args.optimization:
        detector = OnnxDetector.from_file(build_bare_detector(cfg), args.onnx, optimization=level, threads=args.threads)
        network_names = {output.name for output in detector.sessions[NETWORK].get_outputs()}
        per_output: dict[str, OutputDifference] = {}
        divergences = []
        probe = None  # built on the first image that needs it
        for index, batch in enumerate(loader):
            if index == args.images:
                break
            differences = compare_outputs(model, detector, batch["img"], batch["img_metas"], step)
            if last and any(d.over_step for d in differences if d.name in network_names):
                probe = probe or QuantizerProbe(network_graph, level, args.threads)
                divergence = probe.first_divergence(model, batch["img"])
                if divergence is not None:
                    divergences.append(f"  image {index}: {divergence.describe()}")
            for new in differences:
                old = per_output.get(new.name)
                per_output[new.name] = (
                    new
                    if old is None
                    else OutputDifference(
                        new.name,
                        max(old.max_abs_diff, new.max_abs_diff),
                        max(old.max_abs_value, new.max_abs_value),
                        old.over_step + new.over_step,
                        old.elements + new.elements,
                    )
                )
        print(f"optimization {level}:")
        print(f"  {'output':<12} {'max |diff|':>11} {'max |value|':>12} {'steps':>7} {'elements > 1 step':>18}")
        for name, difference in per_output.items():
            steps = f"{difference.max_abs_diff / step:>7.3f}" if last else f"{'-':>7}"
            over = f"{difference.over_step}/{difference.elements}" if last else "-"
            print(f"  {name:<12} {difference.max_abs_diff:>11.3g} {difference.max_abs_value:>12.3g} {steps} {over:>18}")
        if divergences:
            print("\n".join(divergences))
        worst[level] = per_output
    return worst


def cli() -> int:
    return run_command(main)

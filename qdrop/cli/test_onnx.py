"""COCO evaluation of an exported detector in ONNX Runtime (CPU), with the project's pre- and post-processing.

    python tools/deploy/test_onnx.py CONFIG FILE.onnx --eval bbox [--work-dir DIR] [--optimization all]

Writes `<timestamp>.log` and `eval_<timestamp>.json` to --work-dir, as tools/test.py does.
"""

import argparse

from qdrop.deploy.evaluate import evaluate_onnx
from qdrop.deploy.runtime import OPTIMIZATION_LEVELS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate an ONNX detector in ONNX Runtime")
    parser.add_argument("config", help="config file of the exported detector")
    parser.add_argument("onnx", help="network graph from tools/deploy/export_onnx.py")
    parser.add_argument("--eval", nargs="+", required=True, help="metrics, e.g. bbox")
    parser.add_argument("--work-dir", help="directory for the log and eval_<timestamp>.json")
    parser.add_argument(
        "--optimization",
        choices=OPTIMIZATION_LEVELS,
        default="all",
        help="ONNX Runtime graph optimization ('all': 8-bit QDQ runs as integer kernels, 4-bit graphs keep float "
        "conv biases; 'disable': every node as written)",
    )
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    metric = evaluate_onnx(args.config, args.onnx, args.eval, args.work_dir, args.optimization, args.threads)
    print(metric)
    return metric


if __name__ == "__main__":
    main()

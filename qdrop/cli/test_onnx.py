"""COCO evaluation of an exported detector in ONNX Runtime (CPU), with the project's pre- and post-processing.

    python tools/deploy/test_onnx.py CONFIG FILE.onnx --eval bbox [--work-dir DIR] [--optimization all]
        [--cfg-options k=v ...] [--eval-options k=v ...] [--out results.pkl]

Takes the options of tools/test.py and writes `<timestamp>.log` and `eval_<timestamp>.json` to --work-dir like it.
"""

import argparse
import time
from collections.abc import Sequence
from typing import Optional

from qdrop.cli.test import add_evaluation_arguments, check_evaluation_arguments, load_test_config
from qdrop.deploy.runtime import OPTIMIZATION_LEVELS, OnnxDetector
from qdrop.solver.command import run_command
from qdrop.solver.data import build_test_loader
from qdrop.solver.detector import build_bare_detector
from qdrop.solver.evaluation import evaluate, write_eval_record
from qdrop.solver.preflight import check_test_set
from qdrop.solver.work_dir import open_work_dir


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate an ONNX detector in ONNX Runtime")
    parser.add_argument("config", help="config file of the exported detector")
    parser.add_argument("onnx", help="network graph from tools/deploy/export_onnx.py")
    add_evaluation_arguments(parser)
    parser.add_argument(
        "--optimization",
        choices=OPTIMIZATION_LEVELS,
        default="all",
        help="ONNX Runtime graph optimization ('all': 8-bit QDQ runs as integer kernels, 4-bit graphs keep float "
        "conv biases; 'disable': every node as written)",
    )
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    args = parser.parse_args(argv)
    check_evaluation_arguments(parser, args)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Evaluate the graph as the command line says; returns the metrics (empty without --eval)."""
    args = parse_args(argv)
    cfg = load_test_config(args.config, args.cfg_options, args.eval)
    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    with open_work_dir(args.work_dir, timestamp, log_level=cfg.get("log_level", "INFO"), lock=False) as logger:
        detector = OnnxDetector.from_file(
            build_bare_detector(cfg), args.onnx, optimization=args.optimization, threads=args.threads
        )
        detector.check_fits(args.config, args.onnx)
        test_data = build_test_loader(cfg)
        check_test_set(test_data.dataset)
        logger.info(
            f"testing {args.onnx} in ONNX Runtime (CPU, optimization {args.optimization}) on "
            f"{len(test_data.dataset)} images"
        )
        metric = evaluate(
            detector, test_data, cfg, args.eval, logger=logger, eval_options=args.eval_options, results_file=args.out
        )
        if args.eval:
            logger.info(f"metrics: {metric}")
            print(metric)
            if args.work_dir:
                write_eval_record(args.work_dir, timestamp, metric, config=args.config, onnx=args.onnx)
    return metric


def cli() -> int:
    return run_command(main)

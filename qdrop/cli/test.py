"""Evaluate a detector checkpoint on the test split of an mmdetection config (mmdetection 2.x tools/test.py).

    python tools/test.py CONFIG CHECKPOINT --eval bbox [--work-dir DIR] [--fuse-conv-bn] [--out results.pkl]
    qdrop-test CONFIG CHECKPOINT --eval bbox ...       (the same, as an installed command)
    tools/dist_test.sh CONFIG CHECKPOINT GPUS --eval bbox        (torchrun, --launcher pytorch)

CHECKPOINT may also be a quantized checkpoint written by qdrop/solver/quant_coco.py (its q_config travels in it).
"""

import argparse
import os
import time
from collections.abc import Sequence
from typing import Optional

import torch
from mmengine.config import DictAction

from mmdet.apis.inference import prepare_test_config
from mmdet.utils import default_device, get_dist_info, init_dist, load_config
from qdrop.solver.command import add_debug_flag, run_command
from qdrop.solver.data import build_test_loader
from qdrop.solver.detector import load_detector
from qdrop.solver.evaluation import evaluate, write_eval_record
from qdrop.solver.preflight import check_metric_names, check_model_types, check_test_set
from qdrop.solver.work_dir import open_work_dir


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every evaluating command shares (tools/test.py, tools/deploy/test_onnx.py)."""
    parser.add_argument("--work-dir", help="directory for the log and eval_<timestamp>.json")
    parser.add_argument("--out", help="pickle file for the raw results")
    parser.add_argument("--eval", nargs="+", help="metrics, e.g. bbox")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override config keys, key=value (the key must exist in the config; +key=value adds a new one)",
    )
    parser.add_argument(
        "--eval-options",
        nargs="+",
        action=DictAction,
        help="keyword arguments of dataset.evaluate, e.g. classwise=True",
    )
    add_debug_flag(parser)


def check_evaluation_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.out and not args.eval:
        parser.error("give --eval METRIC and/or --out FILE")
    if args.out and not args.out.endswith((".pkl", ".pickle")):
        parser.error(f"--out must be a .pkl or .pickle file, got {args.out}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test (and evaluate) a detector")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file (float, or quantized.pth of quant_coco.py)")
    add_evaluation_arguments(parser)
    parser.add_argument("--fuse-conv-bn", action="store_true", help="fold BatchNorm into the preceding conv")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    check_evaluation_arguments(parser, args)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def load_test_config(config: str, cfg_options: Optional[dict], metrics: Optional[Sequence[str]]):
    """The config in test mode, its model types and metric names checked before any data is read."""
    cfg = prepare_test_config(load_config(config, cfg_options))
    check_model_types(cfg, config)
    if metrics:
        check_metric_names(cfg, metrics)
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Evaluate the checkpoint as the command line says.

    Args:
        argv: the command-line arguments (default: sys.argv[1:]).

    Returns:
        The metrics on rank 0 when --eval is given, else an empty dict.
    """
    args = parse_args(argv)
    cfg = load_test_config(args.config, args.cfg_options, args.eval)
    distributed = args.launcher != "none"
    if distributed:
        init_dist(args.launcher)
    rank, _ = get_dist_info()
    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    with open_work_dir(args.work_dir, timestamp, log_level=cfg.get("log_level", "INFO"), lock=False) as logger:
        test_data = build_test_loader(cfg)
        check_test_set(test_data.dataset, show_progress=None if rank == 0 else False)
        device = default_device()
        model = load_detector(cfg, args.checkpoint, device, fold_bn=args.fuse_conv_bn, logger=logger).model
        if not hasattr(model, "CLASSES"):
            model.CLASSES = test_data.dataset.CLASSES
        logger.info(
            f"testing {args.checkpoint} on {len(test_data.dataset)} images ({device}, launcher {args.launcher})"
        )
        metric = evaluate(
            model, test_data, cfg, args.eval, logger=logger, eval_options=args.eval_options, results_file=args.out
        )
        if rank == 0 and args.eval:
            logger.info(f"metrics: {metric}")
            print(metric)
            if args.work_dir:
                write_eval_record(args.work_dir, timestamp, metric, config=args.config)
    if distributed:
        torch.distributed.destroy_process_group()
    return metric or {}


def cli() -> int:
    """The `qdrop-test` command."""
    return run_command(main)

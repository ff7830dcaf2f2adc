"""Evaluate a detector checkpoint on the test split of an mmdetection config (mmdetection 2.x tools/test.py).

    python tools/test.py CONFIG CHECKPOINT --eval bbox [--work-dir DIR] [--fuse-conv-bn] [--out results.pkl]
    qdrop-test CONFIG CHECKPOINT --eval bbox ...       (the same, as an installed command)

CHECKPOINT may also be a quantized checkpoint written by qdrop/solver/quant_coco.py (its q_config travels in it).
    tools/dist_test.sh CONFIG CHECKPOINT GPUS --eval bbox        (torchrun, --launcher pytorch)
"""

import argparse
import json
import os
import os.path as osp
import pickle
import time
from collections.abc import Sequence
from typing import Optional

import torch
from mmengine.config import DictAction

from mmdet.apis import evaluation_kwargs, multi_gpu_test, single_gpu_test
from mmdet.apis.inference import prepare_test_config
from mmdet.datasets import build_dataloader, build_dataset
from mmdet.models import build_detector
from mmdet.utils import (
    default_device,
    fuse_conv_bn,
    get_dist_info,
    get_root_logger,
    init_dist,
    load_checkpoint,
    load_config,
)
from qdrop.model import is_quantized_checkpoint_file, load_quantized_checkpoint
from qdrop.solver.preflight import check_metric_names, check_test_set


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test (and evaluate) a detector")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="directory for the log and eval_<timestamp>.json")
    parser.add_argument("--out", help="pickle file for the raw results")
    parser.add_argument("--fuse-conv-bn", action="store_true", help="fold BatchNorm into the preceding conv")
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
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.out and not args.eval:
        parser.error("give --eval METRIC and/or --out FILE")
    if args.out and not args.out.endswith((".pkl", ".pickle")):
        parser.error(f"--out must be a .pkl or .pickle file, got {args.out}")
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Evaluate the checkpoint as the command line says.

    Args:
        argv: the command-line arguments (default: sys.argv[1:]).

    Returns:
        The metrics on rank 0 when --eval is given, else an empty dict.
    """
    args = parse_args(argv)
    cfg = prepare_test_config(load_config(args.config, args.cfg_options))
    if args.eval:
        check_metric_names(cfg, args.eval)

    distributed = args.launcher != "none"
    if distributed:
        init_dist(args.launcher)
    rank, _ = get_dist_info()

    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    log_file = None
    if args.work_dir and rank == 0:
        os.makedirs(osp.abspath(args.work_dir), exist_ok=True)
        log_file = osp.join(args.work_dir, f"{timestamp}.log")
    logger = get_root_logger(log_file=log_file, log_level=cfg.get("log_level", "INFO"))

    dataset = build_dataset(cfg.data.test)
    check_test_set(dataset, show_progress=None if rank == 0 else False)
    loader = build_dataloader(
        dataset, samples_per_gpu=1, workers_per_gpu=cfg.data.get("workers_per_gpu", 2), dist=distributed, shuffle=False
    )

    model = build_detector(cfg.model, test_cfg=cfg.get("test_cfg"))
    if is_quantized_checkpoint_file(args.checkpoint):
        # Written by qdrop/solver/quant_coco.py: re-wraps the model (BatchNorm folded) and restores the quantizers.
        checkpoint = load_quantized_checkpoint(model, args.checkpoint)
        logger.info(f"{args.checkpoint} is a quantized checkpoint (q_config in its meta); BatchNorm is folded")
    else:
        checkpoint = load_checkpoint(model, args.checkpoint, map_location="cpu", logger=logger)
        if args.fuse_conv_bn:
            model = fuse_conv_bn(model)
    classes = (checkpoint.get("meta") or {}).get("CLASSES")
    model.CLASSES = tuple(classes) if classes is not None else dataset.CLASSES

    device = default_device()
    model.to(device)
    logger.info(f"testing {args.checkpoint} on {len(dataset)} images ({device}, launcher {args.launcher})")
    outputs = multi_gpu_test(model, loader) if distributed else single_gpu_test(model, loader)

    metric = {}
    if rank == 0:
        if args.out:
            with open(args.out, "wb") as f:
                pickle.dump(outputs, f)
            logger.info(f"results written to {args.out}")
        if args.eval:
            eval_kwargs = evaluation_kwargs(cfg)
            eval_kwargs.update(args.eval_options or {})
            eval_kwargs["metric"] = args.eval
            metric = dataset.evaluate(outputs, logger=logger, **eval_kwargs)
            logger.info(f"metrics: {dict(metric)}")
            print(dict(metric))
            if args.work_dir:
                with open(osp.join(args.work_dir, f"eval_{timestamp}.json"), "w") as f:
                    json.dump(dict(config=args.config, metric=dict(metric)), f, indent=2)
    if distributed:
        torch.distributed.destroy_process_group()
    return dict(metric)


def cli() -> int:
    """The `qdrop-test` command: runs `main` on the command line; the exit status is 0 once it completes."""
    main()
    return 0

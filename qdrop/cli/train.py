"""Train a detector from an mmdetection-format config (`qdrop-train`, or `python tools/train.py`).

qdrop-train configs/tiny/retinanet_tiny_synth.py --work-dir work_dirs/retinanet_tiny_synth
torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch     (or tools/dist_train.sh CONFIG 2)
"""

import argparse
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from mmengine.config import DictAction

from mmdet.apis.train import set_random_seed, train_detector
from mmdet.datasets import build_dataset
from mmdet.models import build_detector
from mmdet.utils import get_dist_info, get_root_logger, init_dist, load_config
from qdrop.solver.command import add_debug_flag, run_command
from qdrop.solver.preflight import check_model_types


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line of `qdrop-train`; sets `LOCAL_RANK` from `--local_rank` when the launcher passes it."""
    parser = argparse.ArgumentParser(description="Train a detector")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<config name>)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's `seed`, else 0)")
    parser.add_argument("--deterministic", action="store_true", help="pin cuDNN to deterministic algorithms")
    parser.add_argument("--no-validate", action="store_true", help="skip evaluation during training")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        default=None,
        help="override config entries, e.g. data_root=data/x/ runner.max_epochs=2 "
        "(keys must exist; +key=value adds a new one)",
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none", help="job launcher")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Load the config, seed, build the detector and its training set, and train; the work dir gets the config,
    `<timestamp>.log`, `<timestamp>.log.json` and the checkpoints.

    Args:
        argv: the arguments after the program name (default: `sys.argv[1:]`).
    """
    args = parse_args(argv)
    cfg = load_config(args.config, cfg_options=args.cfg_options)
    check_model_types(cfg, args.config)
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(args.config).stem)

    distributed = args.launcher != "none"
    if distributed:
        init_dist(args.launcher, backend=dict(cfg.get("dist_params") or {}).get("backend"))
    rank, world_size = get_dist_info()

    work_dir = Path(cfg.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    if rank == 0:
        cfg.dump(str(work_dir / Path(args.config).name))
    logger = get_root_logger(log_file=str(work_dir / f"{timestamp}.log"), log_level=cfg.get("log_level", "INFO"))
    logger.info(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"cuda available: {torch.cuda.is_available()}, {world_size} process(es)"
    )
    logger.info(f"config {args.config}:\n{cfg.pretty_text}")

    seed = args.seed if args.seed is not None else cfg.get("seed", 0)
    set_random_seed(seed, deterministic=args.deterministic)
    cfg.seed = seed
    logger.info(f"seed {seed}, deterministic: {args.deterministic}")

    model = build_detector(cfg.model)
    dataset = build_dataset(cfg.data.train)
    model.CLASSES = dataset.CLASSES
    meta = dict(config=cfg.pretty_text, seed=seed, exp_name=Path(args.config).name, CLASSES=dataset.CLASSES)
    train_detector(
        model, dataset, cfg, distributed=distributed, validate=not args.no_validate, timestamp=timestamp, meta=meta
    )


def cli() -> int:
    """The `qdrop-train` command."""
    return run_command(main)

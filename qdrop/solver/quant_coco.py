"""Quantize an mmdetection detector with QDrop and evaluate it on COCO.

    python qdrop/solver/quant_coco.py CONFIG CHECKPOINT --launcher {none,pytorch,slurm} --work-dir DIR \
        --fuse-conv-bn --eval bbox --q_config exp/config.yaml [--cfg-options k=v ...] [--seed 0]
    qdrop-quant CONFIG CHECKPOINT ...        (the same, as an installed command)

Steps: build the float detector, wrap it, calibrate, reconstruct unit by unit, save the quantized checkpoint,
evaluate. Running the same command again resumes after the last reconstructed unit (work dir file
recon_progress.pth).
"""

import argparse
import logging
import os.path as osp
import sys
import time
from pathlib import Path
from typing import Optional

import torch.distributed as dist
import yaml
from mmengine.config import DictAction

from mmdet.apis.train import set_random_seed
from mmdet.datasets import build_dataset
from mmdet.utils import barrier, default_device, get_dist_info, init_dist, load_config
from mmdet.utils.atomic_io import atomic_write_text
from qdrop.analysis import RunRecord, StageTimer, command_line, peak_memory_mib, write_run_report
from qdrop.config import QConfig, load_q_config
from qdrop.model import format_placement_table, placement_table
from qdrop.model.checkpoint import save_quantized_checkpoint
from qdrop.ptq import run_calibration, run_reconstruction, wrap
from qdrop.solver.command import add_debug_flag, run_command
from qdrop.solver.data import build_test_loader, calibration_batches
from qdrop.solver.detector import load_detector
from qdrop.solver.evaluation import evaluate, write_eval_record
from qdrop.solver.preflight import (
    check_calibration_size,
    check_calibration_split,
    check_metric_names,
    check_model_types,
    check_test_set,
)
from qdrop.solver.progress import ReconProgress, run_fingerprint
from qdrop.solver.work_dir import open_work_dir

QUANTIZED_CHECKPOINT = "quantized.pth"
PLACEMENT_FILE = "placement.txt"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="QDrop post-training quantization of an mmdetection detector")
    parser.add_argument("config", help="mmdetection config file")
    parser.add_argument("checkpoint", help="float checkpoint of that config")
    parser.add_argument(
        "--q_config", required=True, help="quantization YAML (exp/config.yaml: the published W2A4 setting)"
    )
    parser.add_argument(
        "--work-dir",
        help="where log, config, placement, progress, checkpoint and metrics go "
        "(default work_dirs/<config name>_quant)",
    )
    parser.add_argument(
        "--fuse-conv-bn", action="store_true", help="fold BatchNorm into the convs; quantization always does it"
    )
    parser.add_argument("--eval", nargs="+", default=["bbox"], help="metrics, e.g. bbox")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override config keys, key=value (the key must exist in the config; +key=value adds a new one)",
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help="seeds calibration sampling and reconstruction")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def _shared_timestamp() -> str:
    stamp = [time.strftime("%Y%m%d_%H%M%S", time.localtime())]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(stamp, src=0)
    return stamp[0]


def main(argv: Optional[list[str]] = None) -> Optional[dict]:
    """Quantize, reconstruct and evaluate as the command line says.

    Args:
        argv: the command-line arguments (default: sys.argv[1:]).

    Returns:
        The metrics on rank 0 (bbox_mAP, ...), None on the other ranks.
    """
    args = parse_args(argv)
    args.command = command_line(["qdrop/solver/quant_coco.py"] + list(sys.argv[1:] if argv is None else argv))
    q_config = load_q_config(args.q_config)
    cfg = load_config(args.config, args.cfg_options)
    check_model_types(cfg, args.config)
    check_metric_names(cfg, args.eval)
    if args.launcher != "none":
        init_dist(args.launcher)
    rank, world = get_dist_info()
    check_calibration_split(q_config, args.q_config, world)
    work_dir = args.work_dir or osp.join("work_dirs", Path(args.config).stem + "_quant")
    timestamp = _shared_timestamp()
    with open_work_dir(work_dir, timestamp) as logger:  # owned by this run; its log file while it runs
        return _run(args, cfg, q_config, work_dir, timestamp, logger)


def _run(
    args: argparse.Namespace, cfg, q_config: QConfig, work_dir: str, timestamp: str, logger: logging.Logger
) -> Optional[dict]:
    rank, world = get_dist_info()
    device = default_device()
    timer = StageTimer()
    logger.info(f"quant_coco {vars(args)}")
    logger.info(f"{world} process(es), device {device}, seed {args.seed}")
    set_random_seed(args.seed)

    # Inputs are checked before any long step, and the progress before any record is written.
    train_set = build_dataset(cfg.data.train)
    check_calibration_size(q_config, args.q_config, train_set)
    test_data = build_test_loader(cfg)
    check_test_set(test_data.dataset, show_progress=None if rank == 0 else False)
    progress = ReconProgress(work_dir, run_fingerprint(cfg, args.checkpoint, q_config, args.seed, world))
    progress.check()  # another run's or a damaged progress file is refused here, before anything is written

    model = load_detector(cfg, args.checkpoint, device, kind="float", logger=logger).model
    if not args.fuse_conv_bn:
        logger.warning("--fuse-conv-bn not given: BatchNorm is folded anyway (quantized blocks need it)")
    model, fp_model = wrap(model, q_config, device)
    timer.lap("load and quantize")
    table = format_placement_table(placement_table(model))
    logger.info("quantizer placement:\n" + table)
    if rank == 0:
        cfg.dump(osp.join(work_dir, osp.basename(args.config)))
        atomic_write_text(osp.join(work_dir, "q_config.yaml"), yaml.safe_dump(q_config.to_dict(), sort_keys=False))
        atomic_write_text(osp.join(work_dir, PLACEMENT_FILE), table + "\n")

    batches = calibration_batches(cfg, q_config.calibrate, args.seed, dataset=train_set)
    next_unit = progress.restore(model)
    if next_unit is None:
        run_calibration(model, batches, q_config, device)
        timer.lap("calibrate")
        progress.save(model, next_unit=0, finished_units=[])
        next_unit = 0
    else:
        logger.info(f"resuming from {progress.path}: {next_unit} unit(s) already reconstructed")

    def unit_done(done: int, names: list[str]) -> None:
        progress.save(model, next_unit=done, finished_units=names)

    reconstruction = run_reconstruction(
        model,
        fp_model,
        batches,
        q_config,
        device=device,
        seed=args.seed,
        logger=logger,
        start_unit=next_unit,
        on_unit_done=unit_done,
    )
    timer.lap("reconstruct")
    del fp_model
    if rank == 0:
        save_quantized_checkpoint(
            model,
            osp.join(work_dir, QUANTIZED_CHECKPOINT),
            q_config,
            meta={"config": cfg.pretty_text, "finished_units": list(reconstruction.units)},
        )
    barrier()

    metric = evaluate(model, test_data, cfg, args.eval, logger=logger)
    timer.lap("evaluate")
    if rank == 0:
        logger.info(f"metrics: {metric}")
        write_eval_record(work_dir, timestamp, metric, config=args.config)
        written = write_run_report(
            work_dir,
            RunRecord(
                args.command,
                q_config.to_dict(),
                placement_table(model),
                timer.seconds,
                peak_memory_mib(device),
                metric,
                reconstruction.reconstructed,
                placement_file=PLACEMENT_FILE,
            ),
        )
        logger.info("run report: " + ", ".join(written))
    barrier()
    return metric


def cli() -> int:
    """The `qdrop-quant` command: `main` on the command line; errors about the input end as one message."""
    return run_command(main)


if __name__ == "__main__":
    sys.exit(cli())

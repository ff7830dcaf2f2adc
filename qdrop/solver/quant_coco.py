"""Quantize an mmdetection detector with QDrop and evaluate it on COCO (DESIGN.md, "One run").

    python qdrop/solver/quant_coco.py CONFIG CHECKPOINT --launcher {none,pytorch,slurm} --work-dir DIR \
        --fuse-conv-bn --eval bbox --q_config exp/config.yaml [--cfg-options k=v ...] [--seed 0]

Running the same command again resumes after the last reconstructed unit (work dir file recon_progress.pth).
"""
import argparse
import json
import logging
import os
import os.path as osp
import sys
import time
from pathlib import Path
from typing import List, Optional

if __package__ in (None, ""):  # run as a script: make the repository importable without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch.distributed as dist  # noqa: E402
import yaml  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from mmdet.utils import get_dist_info, get_root_logger, init_dist, load_config  # noqa: E402
from mmdet.utils.atomic_io import atomic_write_text  # noqa: E402
from qdrop.model import format_placement_table, placement_table, quantize_detector  # noqa: E402
from qdrop.model.checkpoint import save_quantized_checkpoint  # noqa: E402
from qdrop.solver.calibration import calibrate  # noqa: E402
from qdrop.solver.distributed import barrier  # noqa: E402
from qdrop.solver.pipeline import (build_fp_detector, build_test_loader, calibration_batches,  # noqa: E402
                                   default_device, evaluate, float_reference, seed_everything)
from qdrop.solver.progress import ReconProgress  # noqa: E402
from qdrop.solver.q_config import load_q_config  # noqa: E402
from qdrop.solver.recon import ReconConfig, reconstruct  # noqa: E402

QUANTIZED_CHECKPOINT = "quantized.pth"
PLACEMENT_FILE = "placement.txt"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="QDrop post-training quantization of an mmdetection detector")
    parser.add_argument("config", help="mmdetection config file")
    parser.add_argument("checkpoint", help="float checkpoint of that config")
    parser.add_argument("--q_config", required=True, help="quantization YAML (exp/config.yaml is the seed's W2A4)")
    parser.add_argument("--work-dir", help="where log, config, placement, progress, checkpoint and metrics go "
                                           "(default work_dirs/<config name>_quant)")
    parser.add_argument("--fuse-conv-bn", action="store_true",
                        help="fold BatchNorm into the convs; quantization always does it, as the original did")
    parser.add_argument("--eval", nargs="+", default=["bbox"], help="metrics, e.g. bbox")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help="seeds calibration sampling and reconstruction")
    return parser.parse_args(argv)


def _shared_timestamp() -> str:
    stamp = [time.strftime("%Y%m%d_%H%M%S", time.localtime())]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(stamp, src=0)
    return stamp[0]


def main(argv: Optional[List[str]] = None) -> Optional[dict]:
    """Run the seven steps; returns the metrics on rank 0 (None elsewhere)."""
    args = parse_args(argv)
    q_config = load_q_config(args.q_config)
    recon_cfg = ReconConfig.from_mapping(q_config["recon"])
    cfg = load_config(args.config, args.cfg_options)
    if args.launcher != "none":
        init_dist(args.launcher)
    rank, _ = get_dist_info()
    work_dir = args.work_dir or osp.join("work_dirs", Path(args.config).stem + "_quant")
    if rank == 0:
        os.makedirs(work_dir, exist_ok=True)
    barrier()
    timestamp = _shared_timestamp()
    log_file = osp.join(work_dir, f"{timestamp}.log")
    logger = get_root_logger(log_file=log_file)
    try:
        return _run(args, cfg, q_config, recon_cfg, work_dir, timestamp, logger)
    finally:  # in-process callers (tests, notebooks) must not keep writing into this run's log
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)
                        and h.baseFilename == osp.abspath(log_file)]:
            logger.removeHandler(handler)
            handler.close()


def _run(args: argparse.Namespace, cfg, q_config: dict, recon_cfg: ReconConfig, work_dir: str, timestamp: str,
         logger: logging.Logger) -> Optional[dict]:
    rank, world = get_dist_info()
    device = default_device()
    logger.info(f"quant_coco {vars(args)}")
    logger.info(f"{world} process(es), device {device}, seed {args.seed}")
    seed_everything(args.seed)

    model = build_fp_detector(cfg, args.checkpoint, device, logger)
    if not args.fuse_conv_bn:
        logger.warning("--fuse-conv-bn not given: BatchNorm is folded anyway (quantized blocks need it)")
    quantize_detector(model, q_config)
    model.to(device)
    table = format_placement_table(placement_table(model))
    logger.info("quantizer placement:\n" + table)
    fp_model = float_reference(model)
    test_dataset, test_loader = build_test_loader(cfg)
    if rank == 0:
        cfg.dump(osp.join(work_dir, osp.basename(args.config)))
        atomic_write_text(osp.join(work_dir, "q_config.yaml"), yaml.safe_dump(q_config, sort_keys=False))
        atomic_write_text(osp.join(work_dir, PLACEMENT_FILE), table + "\n")

    fingerprint = {"config": args.config, "checkpoint": args.checkpoint, "cfg_options": dict(args.cfg_options or {}),
                   "q_config": q_config, "seed": args.seed, "world_size": world}
    progress = ReconProgress(work_dir, fingerprint)
    batches = calibration_batches(cfg, int(q_config["calibrate"]), args.seed)
    next_unit = progress.restore(model)
    if next_unit is None:
        calibrate(model, batches, device, run_heads=bool(q_config.get("quant_head", False)))
        progress.save(model, next_unit=0, finished_units=[])
        next_unit = 0
    else:
        logger.info(f"resuming from {progress.path}: {next_unit} unit(s) already reconstructed")
    images = [batch["img"] for batch in batches]

    def unit_done(done: int, names: List[str]) -> None:
        progress.save(model, next_unit=done, finished_units=names)

    if recon_cfg.iters > 0:
        units = reconstruct(model, fp_model, images, recon_cfg, device=device, seed=args.seed, logger=logger,
                            start_unit=next_unit, on_unit_done=unit_done)
    else:
        units = []
        logger.info("recon.iters is 0: no reconstruction (round-to-nearest weights, calibrated scales)")
    del fp_model
    if rank == 0:
        save_quantized_checkpoint(model, osp.join(work_dir, QUANTIZED_CHECKPOINT), q_config,
                                  meta={"config": cfg.pretty_text, "finished_units": units})
    barrier()

    metric = evaluate(model, test_dataset, test_loader, cfg, args.eval, logger=logger)
    if rank == 0:
        logger.info(f"metrics: {metric}")
        atomic_write_text(osp.join(work_dir, f"eval_{timestamp}.json"),
                          json.dumps({"config": args.config, "metric": metric}, indent=2))
    barrier()
    return metric


if __name__ == "__main__":
    main()

"""Demo: the tiny synthetic-data detectors in float, W4A4 and W2A4, without reconstruction, with BRECQ-style
reconstruction (drop_prob 1.0) and with QDrop (drop_prob 0.5); prints a bbox mAP table and writes summary.json,
summary.png and the run report of the first model's W2A4 QDrop run (report_<model>/).

    python exp/demo.py --work-dir work_dirs/demo      (what `make demo` runs, after `make data`)
    qdrop-demo --work-dir work_dirs/demo              (the same, as an installed command)

Configs, checkpoints, q_configs and the synthetic data are found in the project root (the folder holding
configs/, exp/demo/, checkpoints/ and data/; by default the one this package was installed from), wherever the
command is started; --root names another.

Quantization settings come from exp/demo/{w4a4,w2a4}.yaml: the published settings with a schedule 100 times shorter,
so the learning rates there are larger (scale_lr and AdaRound's round_lr). Per model one calibration serves
every variant: activation ranges come from the float model, so they are shared by both weight bit widths, and each
reconstruction starts from a copy of the calibrated model. With several processes (`--jobs`, by default as many as
the CPU cores), every model and setting is a job of its own that calibrates for itself (the same ranges) and seeds
itself, so the table does not depend on the split.
"""

import argparse
import copy
import dataclasses
import json
import multiprocessing
import os
import os.path as osp
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

import torch

from mmdet.apis.train import set_random_seed
from mmdet.utils import default_device, get_root_logger, load_config, update_data_root
from mmdet.utils.atomic_io import atomic_write_text
from mmdet.utils.errors import UserError
from qdrop.analysis import RunRecord, peak_memory_mib, write_run_report
from qdrop.analysis.plots import plot_summary
from qdrop.config import load_q_config
from qdrop.deploy import OnnxDetector
from qdrop.model import placement_table
from qdrop.ptq import run_calibration, run_reconstruction, shares_calibration, wrap
from qdrop.solver.command import add_debug_flag, run_command
from qdrop.solver.data import build_test_loader, calibration_batches
from qdrop.solver.detector import load_detector
from qdrop.solver.evaluation import evaluate

MODELS = {  # name: (config under the project root, checkpoint file name under --checkpoint-dir)
    "retinanet": ("configs/tiny/retinanet_tiny_synth.py", "retinanet_tiny_synth.pth"),
    "faster_rcnn": ("configs/tiny/faster_rcnn_tiny_synth.py", "faster_rcnn_tiny_synth.pth"),
    "fcos": ("configs/tiny/fcos_tiny_synth.py", "fcos_tiny_synth.pth"),
    "mask_rcnn": ("configs/tiny/mask_rcnn_tiny_synth.py", "mask_rcnn_tiny_synth.pth"),
    "cascade_rcnn": ("configs/tiny/cascade_rcnn_tiny_synth.py", "cascade_rcnn_tiny_synth.pth"),
}
DEFAULT_MODELS = ["retinanet", "faster_rcnn"]  # what `make demo` runs; --models names the others
SETTINGS = {"W4A4": "exp/demo/w4a4.yaml", "W2A4": "exp/demo/w2a4.yaml"}  # under the project root
COLUMNS = (
    ["FP"]
    + [f"{setting} {variant}" for setting in SETTINGS for variant in ("none", "BRECQ", "QDrop")]
    + ["ONNX W4A4 QDrop"]
)
REPORTED_RUN = "W2A4 QDrop"  # the column whose run report `make demo` writes
HOW_TO_TRAIN = (
    "make the synthetic data (`make data`), train the tiny models with tools/train.py "
    "(`.venv/bin/python tools/train.py {config} --work-dir work_dirs/{stem}`) and copy the last "
    "checkpoint to {checkpoint}"
)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="work_dirs/demo")
    parser.add_argument(
        "--root",
        default=str(default_root()),
        help="the project root: configs/, exp/demo/, checkpoints/, data/ (default: %(default)s)",
    )
    parser.add_argument("--checkpoint-dir", help="where the tiny checkpoints are (default: ROOT/checkpoints)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(DEFAULT_MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads; the models are tiny, and on a shared CPU more threads mostly "
        "wait for each other (1 thread ran this demo about 10x faster on a busy 2-core machine)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="processes working at the same time, each with --threads threads (default: as many as the CPU cores "
        "allow); with more than one, every model and setting is a job of its own, seeded on its own, so the table "
        "is the same",
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    args.root = osp.abspath(args.root)
    args.checkpoint_dir = args.checkpoint_dir or osp.join(args.root, "checkpoints")
    if args.jobs is None:
        args.jobs = max(1, min(len(args.models) * len(SETTINGS), (os.cpu_count() or 1) // max(args.threads, 1)))
    if args.jobs < 1 or args.threads < 1:
        parser.error(f"--jobs and --threads must be at least 1, got --jobs {args.jobs} --threads {args.threads}")
    return args


class DemoInputError(UserError, FileNotFoundError):
    """A file the demo needs is missing."""


def default_root() -> Path:
    """The project root this package was installed from (an editable install, or a source checkout), else the
    working directory."""
    source = Path(__file__).resolve().parents[2]
    return source if (source / "configs" / "tiny").is_dir() else Path.cwd()


def _missing_checkpoints(args) -> list[str]:
    problems = []
    for name in args.models:
        config, file_name = MODELS[name]
        checkpoint = osp.join(args.checkpoint_dir, file_name)
        if not osp.isfile(checkpoint):
            problems.append(
                f"{checkpoint} is missing: "
                + HOW_TO_TRAIN.format(config=config, stem=Path(config).stem, checkpoint=checkpoint)
            )
    return problems


def metric_names(cfg) -> list[str]:
    """The metrics the demo reports for a config: bbox, and segm for detectors with a mask head."""
    return ["bbox", "segm"] if (cfg.model.get("roi_head") or {}).get("mask_head") else ["bbox"]


def row_name(model: str, metric: str) -> str:
    """The table row of a model's metric: the model's name for bbox, '<model> segm' for masks."""
    return model if metric == "bbox" else f"{model} {metric}"


def run_model(
    name: str,
    root: str,
    checkpoint: str,
    seed: int,
    logger,
    report_dir: Optional[str] = None,
    show_progress: bool = True,
    settings: Sequence[str] = tuple(SETTINGS),
) -> dict[str, dict[str, float]]:
    """mAP of the columns of `settings` for one model (with FP when the first setting is among them), one row per
    metric (bbox; segm too for Mask R-CNN); settings with the same activation quantizers share a calibration. With
    `report_dir`, the run report of the REPORTED_RUN column goes there; `show_progress` draws progress bars."""
    config_path, _ = MODELS[name]
    cfg = load_config(osp.join(root, config_path))
    if not os.environ.get("MMDET_DATASETS"):  # the data set's relative paths are relative to the project root
        update_data_root(cfg, osp.join(root, cfg.data_root))
    device = default_device()
    set_random_seed(seed)
    fp_model = load_detector(cfg, checkpoint, device, kind="float", logger=logger).model
    test_data = build_test_loader(cfg)
    metrics = metric_names(cfg)
    rows: dict[str, dict[str, float]] = {row_name(name, metric): {} for metric in metrics}

    def mean_ap(model, column: str) -> None:
        started = time.time()
        result = evaluate(model, test_data, cfg, metrics, show_progress=show_progress)
        scores = ", ".join(f"{metric}_mAP {result[f'{metric}_mAP']:.4f}" for metric in metrics)
        logger.info(f"{name} {column}: {scores} (evaluated in {time.time() - started:.0f} s)")
        for metric in metrics:
            rows[row_name(name, metric)][column] = result[f"{metric}_mAP"]

    if next(iter(SETTINGS)) in settings:
        mean_ap(fp_model, "FP")
    calibrated = None  # (model, its q_config) of the first calibration
    for setting in settings:
        q_config = load_q_config(osp.join(root, SETTINGS[setting]))
        batches = calibration_batches(cfg, q_config.calibrate, seed)
        q_model, reference = wrap(copy.deepcopy(fp_model), q_config, device)
        started = time.time()
        if calibrated is not None and shares_calibration(calibrated[1], q_config):
            run_calibration(q_model, batches, q_config, device, calibrated=calibrated[0], show_progress=show_progress)
        else:
            run_calibration(q_model, batches, q_config, device, show_progress=show_progress)
            calibrated = (q_model, q_config)
        calibrate_seconds = time.time() - started
        logger.info(f"{name} {setting}: calibrated in {calibrate_seconds:.0f} s")
        mean_ap(q_model, f"{setting} none")
        for variant, drop_prob in (("BRECQ", 1.0), ("QDrop", q_config.recon.drop_prob)):
            model = copy.deepcopy(q_model)
            started = time.time()
            reconstruction = run_reconstruction(
                model,
                reference,
                batches,
                q_config,
                device=device,
                seed=seed,
                logger=logger,
                drop_prob=drop_prob,
                show_progress=show_progress,
            )
            reconstruct_seconds = time.time() - started
            logger.info(f"{name} {setting} {variant}: reconstructed in {reconstruct_seconds:.0f} s")
            mean_ap(model, f"{setting} {variant}")
            if report_dir is not None and f"{setting} {variant}" == REPORTED_RUN:
                record = RunRecord(
                    f"python exp/demo.py ({name}, column {REPORTED_RUN})",
                    q_config.to_dict(),
                    placement_table(model),
                    {"calibrate": calibrate_seconds, "reconstruct": reconstruct_seconds},
                    peak_memory_mib(device),
                    {f"{metric}_mAP": rows[row_name(name, metric)][REPORTED_RUN] for metric in metrics},
                    reconstruction.reconstructed,
                )
                write_run_report(report_dir, record)
            if setting == "W4A4" and variant == "QDrop":  # the same model exported to ONNX, run in ONNX Runtime
                mean_ap(OnnxDetector.from_model(model), "ONNX W4A4 QDrop")
            del model
    return rows


@dataclasses.dataclass(frozen=True)
class DemoJob:
    """What one process of the demo computes: some settings of one model."""

    model: str
    settings: tuple[str, ...]
    root: str
    checkpoint: str
    seed: int
    threads: int
    log_file: str
    report_dir: Optional[str]
    show_progress: bool


def report_dir_of(args: argparse.Namespace) -> str:
    """Where the run report of the first model's REPORTED_RUN column goes."""
    return osp.join(args.work_dir, f"report_{args.models[0]}")


def plan_jobs(args: argparse.Namespace, log_file: str) -> list[DemoJob]:
    """One job per model in one process; with several processes, one job per model and setting, the slowest model
    (Faster R-CNN) first, so that the processes finish close together. Every job seeds itself, so the split does not
    change the table."""
    report_dir = report_dir_of(args)
    split = [(setting,) for setting in SETTINGS] if args.jobs > 1 else [tuple(SETTINGS)]
    models = sorted(args.models, key=lambda name: name != "faster_rcnn") if args.jobs > 1 else args.models
    return [
        DemoJob(
            model=name,
            settings=settings,
            root=args.root,
            checkpoint=osp.join(args.checkpoint_dir, MODELS[name][1]),
            seed=args.seed,
            threads=args.threads,
            log_file=log_file,
            report_dir=report_dir if name == args.models[0] and REPORTED_RUN.split()[0] in settings else None,
            show_progress=args.jobs == 1,
        )
        for name in models
        for settings in split
    ]


def run_job(job: DemoJob) -> dict[str, dict[str, float]]:
    """`run_model` for a job, with its thread count and log file (the body of each demo process)."""
    torch.set_num_threads(job.threads)
    logger = get_root_logger(log_file=job.log_file)
    started = time.time()
    rows = run_model(
        job.model,
        job.root,
        job.checkpoint,
        job.seed,
        logger,
        report_dir=job.report_dir,
        show_progress=job.show_progress,
        settings=job.settings,
    )
    logger.info(f"{job.model} {'+'.join(job.settings)}: done in {time.time() - started:.0f} s")
    return rows


def format_table(summary: dict[str, dict[str, float]]) -> str:
    header = ["model"] + COLUMNS
    rows = [[name] + [f"{100 * row[column]:.1f}" for column in COLUMNS] for name, row in summary.items()]
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]
    lines = [" | ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in [header] + rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return f"{metric_title(summary)} (%) on the synthetic val set\n" + "\n".join(lines)


def metric_title(summary: dict[str, dict[str, float]]) -> str:
    """What the table's and the figure's values are: bbox mAP, and mask mAP in the '<model> segm' rows."""
    masks = any(name.endswith(" segm") for name in summary)
    return "mAP (bbox; rows '<model> segm': mask)" if masks else "bbox mAP"


def main(argv: Optional[list[str]] = None) -> dict[str, dict[str, float]]:
    """Run the demo as the command line says.

    Args:
        argv: the command-line arguments (default: sys.argv[1:]).

    Returns:
        The table: mAP by row (a model's bbox, '<model> segm' for its masks) and column.

    Raises:
        DemoInputError: a tiny checkpoint is missing (the message says how to make it).
    """
    args = parse_args(argv)
    problems = _missing_checkpoints(args)
    if problems:
        raise DemoInputError("\n".join(problems))
    os.makedirs(args.work_dir, exist_ok=True)
    log_file = osp.join(args.work_dir, f"demo_{time.strftime('%Y%m%d_%H%M%S')}.log")
    logger = get_root_logger(log_file=log_file)
    started = time.time()
    report_dir = report_dir_of(args)
    jobs = plan_jobs(args, log_file)
    if args.jobs == 1:
        results = [run_job(job) for job in jobs]
    else:
        logger.info(f"{len(jobs)} jobs in {args.jobs} processes of {args.threads} thread(s); progress bars are off")
        # spawn: a fresh interpreter per process, as forking a process that has used torch's thread pools may hang.
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_job, jobs))
    merged: dict[str, dict[str, float]] = {}
    for model_rows in results:
        for name, row in model_rows.items():
            merged.setdefault(name, {}).update(row)
    order = [row_name(model, metric) for model in args.models for metric in ("bbox", "segm")]
    summary = {name: {column: merged[name][column] for column in COLUMNS} for name in order if name in merged}
    table = (
        format_table(summary)
        + "\n"
        + "\n".join(
            f"{name}: W4A4 QDrop is {100 * (row['FP'] - row['W4A4 QDrop']):.1f} points below FP; W2A4 QDrop is "
            f"{100 * (row['W2A4 QDrop'] - row['W2A4 none']):.1f} points above W2A4 without reconstruction"
            for name, row in summary.items()
        )
    )
    logger.info(f"\n{table}\ntotal {time.time() - started:.0f} s")
    atomic_write_text(osp.join(args.work_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    atomic_write_text(osp.join(args.work_dir, "summary.txt"), table + "\n")
    print(table)
    try:
        plot_summary(summary, osp.join(args.work_dir, "summary.png"), metric=metric_title(summary))
        print(f"figure: {osp.join(args.work_dir, 'summary.png')}")
    except ImportError as error:
        print(f"summary.png not drawn: {error}")
    print(f"run report of {args.models[0]} {REPORTED_RUN}: {osp.join(report_dir, 'report.md')}")
    return summary


def cli() -> int:
    """The `qdrop-demo` command (`make demo`)."""
    return run_command(main)

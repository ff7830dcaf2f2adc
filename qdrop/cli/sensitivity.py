"""Per-unit sensitivity of a detector to quantization: each reconstruction unit quantized alone, the rest float.

    python tools/analysis/sensitivity.py CONFIG CHECKPOINT --q_config Q [--metric output_error|bbox]
        [--work-dir DIR] [--suggest-bits BUDGET [--high-bit 4]]

The detector is calibrated once with the q_config (no reconstruction: round-to-nearest weights); then every unit
is quantized alone. `output_error` (default, fast) is the relative squared error of the neck's features on the
calibration images; `bbox` evaluates the val set per unit (slow) and scores the drop in bbox mAP from the float
model. Writes sensitivity.json ({"metric", "units": [{"unit", "score"}, ...] in forward order}) and
sensitivity.png into the work dir and prints the ten most sensitive units. `--suggest-bits BUDGET` also prints
(and writes to suggested_overrides.yaml) the q_config `overrides:` that raise the weights of the most sensitive
units to `--high-bit` bits while the average weight bit width stays within BUDGET.
"""

import argparse
import json
import os
import os.path as osp
from pathlib import Path
from typing import Optional

from mmdet.utils import default_device, get_root_logger, load_config
from mmdet.utils.atomic_io import atomic_write_text
from qdrop.analysis.mixed_precision import (
    average_weight_bits,
    format_overrides,
    suggest_overrides,
    unit_weight_bits,
    unit_weight_counts,
)
from qdrop.analysis.plots import plot_sensitivity
from qdrop.analysis.sensitivity import METRICS, OUTPUT_ERROR, OutputError, quantize_only, top_units, unit_sensitivity
from qdrop.config import QConfigError, load_q_config
from qdrop.model import quantization_units
from qdrop.ptq import run_calibration, wrap
from qdrop.ptq.capture import forward_order
from qdrop.solver.command import add_debug_flag, run_command
from qdrop.solver.data import build_test_loader, calibration_batches
from qdrop.solver.detector import load_detector
from qdrop.solver.evaluation import evaluate
from qdrop.solver.preflight import check_model_types
from qdrop.solver.work_dir import WorkDirError

RESULT_FILE = "sensitivity.json"
FIGURE_FILE = "sensitivity.png"
OVERRIDES_FILE = "suggested_overrides.yaml"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="mmdetection config file")
    parser.add_argument("checkpoint", help="float checkpoint of that config")
    parser.add_argument("--q_config", required=True, help="quantization YAML, e.g. exp/demo/w2a4.yaml")
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default=OUTPUT_ERROR,
        help="output_error: relative feature error on the calibration images (fast); "
        "bbox: drop in val bbox mAP (one evaluation per unit)",
    )
    parser.add_argument("--work-dir", help="where the results go (default work_dirs/<config name>_sensitivity)")
    parser.add_argument(
        "--suggest-bits", type=float, metavar="BUDGET", help="propose overrides within this average weight bit width"
    )
    parser.add_argument("--high-bit", type=int, default=4, help="weight bits of the units that --suggest-bits raises")
    parser.add_argument("--seed", type=int, default=0, help="seeds the draw of the calibration images")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    q_config = load_q_config(args.q_config)
    if args.suggest_bits is not None and not q_config.w_qconfig.bit < args.high_bit <= 8:
        raise QConfigError(
            f"--high-bit {args.high_bit}: must lie above the q_config's {q_config.w_qconfig.bit}-bit weights "
            "and at most 8"
        )
    cfg = load_config(args.config)
    check_model_types(cfg, args.config)
    work_dir = args.work_dir or osp.join("work_dirs", Path(args.config).stem + "_sensitivity")
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as error:
        raise WorkDirError(f"work dir {work_dir} cannot be created: {error.strerror or error}") from None
    logger = get_root_logger()
    device = default_device()

    model = load_detector(cfg, args.checkpoint, device, kind="float", logger=logger).model
    batches = calibration_batches(cfg, q_config.calibrate, args.seed)
    model, _ = wrap(model, q_config, device)
    run_calibration(model, batches, q_config, device)
    images = [batch["img"] for batch in batches]
    units = forward_order(model, quantization_units(model), images[0].to(device))

    if args.metric == OUTPUT_ERROR:
        damage = OutputError(model, images, device)
    else:
        test_data = build_test_loader(cfg)

        def mean_ap() -> float:
            return evaluate(model, test_data, cfg, ["bbox"], show_progress=True)["bbox_mAP"]

        quantize_only(model, None)
        float_map = mean_ap()
        print(f"float bbox_mAP {float_map:.4f}; evaluating {len(units)} units")

        def damage() -> float:
            return float_map - mean_ap()

    def progress(index: int, name: str, score: float) -> None:
        print(f"unit {index + 1}/{len(units)} {name}: {args.metric} {score:.6g}", flush=True)

    records = unit_sensitivity(model, units, damage, on_unit=progress)
    result = {"metric": args.metric if args.metric == OUTPUT_ERROR else "bbox_mAP drop", "units": records}
    atomic_write_text(osp.join(work_dir, RESULT_FILE), json.dumps(result, indent=2) + "\n")
    written = [osp.join(work_dir, RESULT_FILE)]
    try:
        plot_sensitivity(records, osp.join(work_dir, FIGURE_FILE), metric=result["metric"])
        written.append(osp.join(work_dir, FIGURE_FILE))
    except ImportError as error:
        print(f"{FIGURE_FILE} not drawn: {error}")
    print(f"\nmost sensitive units ({result['metric']}, higher is worse):")
    for rank, record in enumerate(top_units(records), start=1):
        print(f"{rank:3d}. {record['unit']:<40s} {record['score']:.6g}")

    if args.suggest_bits is not None:
        counts, bits = unit_weight_counts(model), unit_weight_bits(model)
        entries = suggest_overrides(records, counts, bits, args.suggest_bits, args.high_bit)
        raised = {**bits, **{entry["modules"]: float(args.high_bit) for entry in entries}}
        block = format_overrides(entries)
        atomic_write_text(osp.join(work_dir, OVERRIDES_FILE), block)
        written.append(osp.join(work_dir, OVERRIDES_FILE))
        print(
            f"\naverage weight bits {average_weight_bits(bits, counts):.3f} -> "
            f"{average_weight_bits(raised, counts):.3f} (budget {args.suggest_bits:g}); add to the q_config:\n" + block
        )
    print("written: " + ", ".join(written))
    return result


def cli() -> int:
    return run_command(main)

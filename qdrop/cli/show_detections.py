"""Float and quantized detections of the same val images, side by side, one PNG per image.

    python tools/analysis/show_detections.py CONFIG CHECKPOINT [QUANTIZED] --images 4 --out DIR [--score-thr 0.3]

CHECKPOINT is the float checkpoint of CONFIG; QUANTIZED a quantized checkpoint written by qdrop/solver/quant_coco.py
(quantized.pth in its work dir). Without QUANTIZED only the float detections are drawn. Needs matplotlib:
pip install -e .[analysis].
"""

import argparse
import os
import os.path as osp
import sys
from pathlib import Path
from typing import Optional

import cv2

from mmdet.apis import inference_detector
from mmdet.datasets import build_dataset
from mmdet.utils import load_config
from qdrop.analysis.plots import plot_detections, pyplot
from qdrop.solver.command import add_debug_flag, run_command
from qdrop.solver.detector import load_detector
from qdrop.solver.preflight import check_model_types


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="mmdetection config file")
    parser.add_argument("checkpoint", help="float checkpoint of that config")
    parser.add_argument("quantized", nargs="?", help="quantized checkpoint (quant_coco.py's quantized.pth)")
    parser.add_argument("--images", type=int, default=4, help="how many val images, from the first")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--score-thr", type=float, default=0.3, help="detections below this score are not drawn")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be at least 1, got {args.images}")
    return args


def val_image_paths(cfg, count: int) -> list[str]:
    """The first `count` image files of the config's test split."""
    dataset = build_dataset(dict(cfg.data.test, test_mode=True))
    if count > len(dataset):
        raise ValueError(
            f"--images {count}: the test split of the config ({cfg.data.test.ann_file}) has only {len(dataset)} images"
        )
    return [osp.join(dataset.img_prefix or "", info["filename"]) for info in dataset.data_infos[:count]]


def _for_inference(model, cfg):
    """`inference_detector` reads the test pipeline from `model.cfg`, as mmdetection's init_detector sets it."""
    model.cfg = cfg
    return model


def main(argv: Optional[list[str]] = None) -> list[str]:
    args = parse_args(argv)
    try:
        pyplot()
    except ImportError as error:
        sys.exit(str(error))
    cfg = load_config(args.config)
    check_model_types(cfg, args.config)
    paths = val_image_paths(cfg, args.images)
    models = [("float", _for_inference(load_detector(cfg, args.checkpoint, kind="float", fold_bn=False).model, cfg))]
    if args.quantized:
        models.append(("quantized", _for_inference(load_detector(cfg, args.quantized, kind="quantized").model, cfg)))
    classes = models[0][1].CLASSES
    os.makedirs(args.out, exist_ok=True)
    written = []
    for path in paths:
        image = cv2.imread(path)
        if image is None:
            raise FileNotFoundError(f"cannot read image {path} (listed in {cfg.data.test.ann_file})")
        panels = [(name, inference_detector(model, path)) for name, model in models]
        out_path = osp.join(args.out, Path(path).stem + ".png")
        plot_detections(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), panels, classes, out_path, args.score_thr)
        written.append(out_path)
        print(out_path)
    return written


def cli() -> int:
    return run_command(main)

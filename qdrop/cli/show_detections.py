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

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import cv2  # noqa: E402

from mmdet.apis import inference_detector, init_detector  # noqa: E402
from mmdet.datasets import build_dataset  # noqa: E402
from mmdet.utils import load_config  # noqa: E402
from qdrop.analysis.plots import plot_detections, pyplot  # noqa: E402
from qdrop.model import load_quantized_checkpoint  # noqa: E402


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="mmdetection config file")
    parser.add_argument("checkpoint", help="float checkpoint of that config")
    parser.add_argument("quantized", nargs="?", help="quantized checkpoint (quant_coco.py's quantized.pth)")
    parser.add_argument("--images", type=int, default=4, help="how many val images, from the first")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--score-thr", type=float, default=0.3, help="detections below this score are not drawn")
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


def main(argv: Optional[list[str]] = None) -> list[str]:
    args = parse_args(argv)
    try:
        pyplot()
    except ImportError as error:
        sys.exit(str(error))
    cfg = load_config(args.config)
    paths = val_image_paths(cfg, args.images)
    models = [("float", init_detector(args.config, args.checkpoint))]
    if args.quantized:
        quantized = init_detector(args.config)
        load_quantized_checkpoint(quantized, args.quantized)
        models.append(("quantized", quantized.eval()))
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


if __name__ == "__main__":
    main()

"""Full-forward inference time of our Faster R-CNN / RetinaNet / FCOS R50-FPN against torchvision's, random weights.

Both sides get the same 1x3xHxW tensor (default 800x1216). Ours runs `simple_test(img, metas, rescale=True)` with the
configs' test_cfg; torchvision's models run in eval mode with min_size=800, max_size=1333, which keeps an 800x1216
input at its size (its transform still normalises and re-samples the tensor, included in its time). Runs alternate
between the two implementations so that load changes on a shared machine hit both.

    python benchmarks/inference.py --threads 2 --repeats 3 [--models FCOS]
"""

import argparse
import copy
import statistics
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision

from mmdet.models import build_detector
from mmdet.utils import load_config
from timing import time_interleaved

CONFIGS = {
    "Faster R-CNN R50-FPN": ("configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py", "fasterrcnn_resnet50_fpn"),
    "RetinaNet R50-FPN": ("configs/retinanet/retinanet_r50_fpn_2x_coco.py", "retinanet_resnet50_fpn"),
    "FCOS R50-FPN": ("configs/fcos/fcos_r50_caffe_fpn_gn-head_1x_coco.py", "fcos_resnet50_fpn"),
}


def ours(config: str, img: torch.Tensor) -> Callable[[], list]:
    cfg = load_config(str(Path(__file__).resolve().parents[1] / config))
    cfg.model.train_cfg = None
    model = build_detector(cfg.model).eval()
    height, width = img.shape[-2:]
    meta = dict(
        ori_shape=(height, width, 3),
        img_shape=(height, width, 3),
        pad_shape=(height, width, 3),
        scale_factor=np.ones(4, dtype=np.float32),
        flip=False,
        flip_direction=None,
    )
    return lambda: model.simple_test(img, [copy.deepcopy(meta)], rescale=True)


def theirs(name: str, img: torch.Tensor) -> Callable[[], list]:
    model = getattr(torchvision.models.detection, name)(
        weights=None, weights_backbone=None, min_size=800, max_size=1333
    )
    model.eval()
    return lambda: model([img[0]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1216)
    parser.add_argument(
        "--models", nargs="+", default=None, help="substrings of the model labels to run (default: all)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    img = torch.randn(1, 3, args.height, args.width)
    print(
        f"input 1x3x{args.height}x{args.width}, CPU, {args.threads} threads, warmup {args.warmup}, "
        f"median of {args.repeats}, torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
    print(f"{'model':<22} {'ours s':>8} {'torchvision s':>14} {'ratio':>7}")
    for label, (config, tv_name) in CONFIGS.items():
        if args.models and not any(word.lower() in label.lower() for word in args.models):
            continue
        result = time_interleaved(
            {"ours": ours(config, img), "tv": theirs(tv_name, img)}, args.warmup, args.repeats, reduce=statistics.median
        )
        print(f"{label:<22} {result['ours']:>8.3f} {result['tv']:>14.3f} {result['ours'] / result['tv']:>7.2f}")


if __name__ == "__main__":
    main()

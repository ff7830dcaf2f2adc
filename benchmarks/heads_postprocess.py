"""Test-time post-processing of our heads against torchvision's equivalents, on the same random head outputs (CPU).

Only the work after the head's convolutions/FCs is timed (anchors, decoding, top-k, thresholds, NMS):
- RPN: our `RPNHead.get_bboxes` vs torchvision's anchor generation + decode + `filter_proposals` (1000 per level,
  NMS 0.7).
- RetinaNet: our `RetinaHead.get_bboxes` vs torchvision's anchor generation + `postprocess_detections`.
- RoI head: our `Shared2FCBBoxHead.get_bboxes` (1000 RoIs, 80 classes) vs torchvision's `postprocess_detections`.
Input 800 x 1216 (P2..P7 sizes of that image). Runs alternate between the two sides so machine load hits both;
the fastest run of each side is reported (the least disturbed by other processes on a shared machine).

    python benchmarks/heads_postprocess.py --threads 2 --repeats 5
"""

import argparse
from typing import Callable

import numpy as np
import torch
import torchvision
from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet as TvRetinaNet
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers

from mmdet.models.builder import build_head
from timing import time_interleaved

HEIGHT, WIDTH = 800, 1216
META = dict(img_shape=(HEIGHT, WIDTH, 3), pad_shape=(HEIGHT, WIDTH, 3), scale_factor=np.ones(4, dtype=np.float32))


def level_sizes(strides) -> list[tuple]:
    sizes, h, w = [], HEIGHT, WIDTH
    for stride in strides:
        if stride <= 32:
            sizes.append((HEIGHT // stride, WIDTH // stride))
        else:
            h, w = (sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2
            sizes.append((h, w))
    return sizes


def rpn_case() -> dict[str, Callable]:
    sizes = level_sizes([4, 8, 16, 32, 64])
    scores = [torch.randn(1, 3, h, w) * 2 for h, w in sizes]
    deltas = [torch.randn(1, 12, h, w) * 0.2 for h, w in sizes]
    ours = build_head(
        dict(
            type="RPNHead",
            in_channels=256,
            feat_channels=256,
            test_cfg=dict(nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
        )
    )
    tv_anchors = TvAnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    tv = RegionProposalNetwork(
        tv_anchors,
        torch.nn.Identity(),
        0.7,
        0.3,
        256,
        0.5,
        dict(training=2000, testing=1000),
        dict(training=2000, testing=1000),
        0.7,
    ).eval()
    images = ImageList(torch.zeros(1, 3, HEIGHT, WIDTH), [(HEIGHT, WIDTH)])
    features = [torch.zeros(1, 1, h, w) for h, w in sizes]

    def theirs():
        anchors = tv.anchor_generator(images, features)
        per_level = [s[0].numel() for s in scores]
        objectness, pred = concat_box_prediction_layers(scores, deltas)
        proposals = tv.box_coder.decode(pred, anchors).view(1, -1, 4)
        return tv.filter_proposals(proposals, objectness, images.image_sizes, per_level)

    return {"ours": lambda: ours.get_bboxes(scores, deltas, [META]), "torchvision": theirs}


def retina_case() -> dict[str, Callable]:
    sizes = level_sizes([8, 16, 32, 64, 128])
    scores = [torch.randn(1, 720, h, w) * 1.2 - 6 for h, w in sizes]  # a few thousand (anchor, class) pairs > 0.05
    deltas = [torch.randn(1, 36, h, w) * 0.2 for h, w in sizes]
    ours = build_head(
        dict(
            type="RetinaHead",
            num_classes=80,
            in_channels=8,
            stacked_convs=1,
            feat_channels=8,
            test_cfg=dict(
                nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100
            ),
        )
    )
    sizes_tv = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in [32, 64, 128, 256, 512])
    tv = TvRetinaNet(
        torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
            backbone_name="resnet18", weights=None, trainable_layers=0
        ),
        num_classes=80,
        anchor_generator=TvAnchorGenerator(sizes_tv, ((0.5, 1.0, 2.0),) * 5),
    ).eval()
    images = ImageList(torch.zeros(1, 3, HEIGHT, WIDTH), [(HEIGHT, WIDTH)])
    features = [torch.zeros(1, 1, h, w) for h, w in sizes]

    def theirs():
        # torchvision's head returns (N, H*W*A, K): its forward's permute/reshape is part of the work compared.
        flat_cls = [s.view(1, 9, 80, *s.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(1, -1, 80) for s in scores]
        flat_reg = [d.view(1, 9, 4, *d.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(1, -1, 4) for d in deltas]
        anchors = tv.anchor_generator(images, features)
        counts = [c.size(1) for c in flat_cls]
        split_anchors = [list(a.split(counts)) for a in anchors]
        return tv.postprocess_detections(
            {"cls_logits": flat_cls, "bbox_regression": flat_reg}, split_anchors, images.image_sizes
        )

    return {"ours": lambda: ours.get_bboxes(scores, deltas, [META]), "torchvision": theirs}


def roi_case() -> dict[str, Callable]:
    xy = torch.rand(1000, 2) * torch.tensor([WIDTH - 100, HEIGHT - 100])
    proposals = torch.cat([xy, xy + 20 + torch.rand(1000, 2) * 300], dim=1)
    rois = torch.cat([proposals.new_zeros(1000, 1), proposals], dim=1)
    cls_score = torch.randn(1000, 81) * 3
    bbox_pred = torch.randn(1000, 320) * 0.5
    ours = build_head(dict(type="Shared2FCBBoxHead", in_channels=8, fc_out_channels=8, roi_feat_size=7, num_classes=80))
    cfg = dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)
    tv = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100)
    # torchvision puts the background first: move our last column to the front for the same scores.
    tv_scores = torch.cat([cls_score[:, 80:], cls_score[:, :80]], dim=1)
    tv_deltas = torch.cat([bbox_pred.new_zeros(1000, 4), bbox_pred], dim=1)

    return {
        "ours": lambda: ours.get_bboxes(
            rois, cls_score, bbox_pred, META["img_shape"], META["scale_factor"], rescale=True, cfg=cfg
        ),
        "torchvision": lambda: tv.postprocess_detections(tv_scores, tv_deltas, [proposals], [(HEIGHT, WIDTH)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"input {HEIGHT}x{WIDTH}, CPU, {args.threads} threads, best of {args.repeats}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
    print(f"{'post-processing':<16} {'ours ms':>9} {'torchvision ms':>15} {'ratio':>7}")
    for label, make in (("RPN", rpn_case), ("RetinaNet", retina_case), ("RoI head", roi_case)):
        result = time_interleaved(make(), args.warmup, args.repeats, reduce=min)
        print(
            f"{label:<16} {result['ours'] * 1e3:>9.1f} {result['torchvision'] * 1e3:>15.1f} "
            f"{result['ours'] / result['torchvision']:>7.2f}"
        )


if __name__ == "__main__":
    main()

"""Small detectors, q_configs and data shared by the tests of the QDrop pipeline (tests/test_qdrop/)."""

import copy
import socket
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from mmdet.datasets.synthetic import make_synthetic_coco
from mmdet.models import build_detector
from mmdet.utils import fuse_conv_bn, save_checkpoint

NUM_CLASSES = 6  # the synthetic data set's classes


def backbone_cfg(depth: int) -> dict:
    base = 8 if depth == 18 else 4
    return dict(
        type="ResNet",
        depth=depth,
        base_channels=base,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=False,
        style="pytorch",
        init_cfg=None,
    )


def stage_channels(depth: int) -> list:
    base, expansion = (8, 1) if depth == 18 else (4, 4)
    return [base * 2**i * expansion for i in range(4)]


def retinanet_cfg(depth: int = 18) -> dict:
    return dict(
        type="RetinaNet",
        backbone=backbone_cfg(depth),
        neck=dict(
            type="FPN",
            in_channels=stage_channels(depth),
            out_channels=16,
            start_level=1,
            add_extra_convs="on_input",
            num_outs=5,
        ),
        bbox_head=dict(
            type="RetinaHead",
            num_classes=NUM_CLASSES,
            in_channels=16,
            stacked_convs=1,
            feat_channels=16,
            anchor_generator=dict(
                type="AnchorGenerator",
                octave_base_scale=2,
                scales_per_octave=2,
                ratios=[0.5, 1.0, 2.0],
                strides=[8, 16, 32, 64, 128],
            ),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0),
        ),
        train_cfg=dict(
            assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
            allowed_border=-1,
            pos_weight=-1,
            debug=False,
        ),
        test_cfg=dict(
            nms_pre=200, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=50
        ),
    )


def faster_rcnn_cfg(depth: int = 50) -> dict:
    return dict(
        type="FasterRCNN",
        backbone=backbone_cfg(depth),
        neck=dict(type="FPN", in_channels=stage_channels(depth), out_channels=16, num_outs=5),
        rpn_head=dict(
            type="RPNHead",
            in_channels=16,
            feat_channels=16,
            anchor_generator=dict(
                type="AnchorGenerator", scales=[3], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]
            ),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0),
        ),
        roi_head=dict(
            type="StandardRoIHead",
            bbox_roi_extractor=dict(
                type="SingleRoIExtractor",
                roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0),
                out_channels=16,
                featmap_strides=[4, 8, 16, 32],
            ),
            bbox_head=dict(
                type="Shared2FCBBoxHead",
                in_channels=16,
                fc_out_channels=32,
                roi_feat_size=7,
                num_classes=NUM_CLASSES,
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
                reg_class_agnostic=False,
                loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type="L1Loss", loss_weight=1.0),
            ),
        ),
        train_cfg=None,
        test_cfg=dict(
            rpn=dict(nms_pre=200, max_per_img=50, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=50),
        ),
    )


def cascade_rcnn_cfg(depth: int = 50) -> dict:
    """The tiny Faster R-CNN with Cascade R-CNN's RoI head: three class-agnostic Shared2FCBBoxHead stages, each with
    its own RoI extractor (one config repeated) and coder stds."""
    cfg = faster_rcnn_cfg(depth)
    single = cfg["roi_head"]
    stds = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
    heads = []
    for stage_stds in stds:
        head = copy.deepcopy(single["bbox_head"])
        head["reg_class_agnostic"] = True
        head["bbox_coder"] = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=list(stage_stds))
        heads.append(head)
    cfg["type"] = "CascadeRCNN"
    cfg["roi_head"] = dict(
        type="CascadeRoIHead",
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=single["bbox_roi_extractor"],
        bbox_head=heads,
    )
    return cfg


def mask_rcnn_cfg(depth: int = 50) -> dict:
    """The tiny Faster R-CNN with Mask R-CNN's mask branch: a 14x14 mask RoI extractor and an FCNMaskHead of two
    16-channel convs, the 2x ConvTranspose2d upsample and 28x28 mask logits."""
    cfg = faster_rcnn_cfg(depth)
    cfg["type"] = "MaskRCNN"
    cfg["roi_head"]["mask_roi_extractor"] = dict(
        type="SingleRoIExtractor",
        roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0),
        out_channels=16,
        featmap_strides=[4, 8, 16, 32],
    )
    cfg["roi_head"]["mask_head"] = dict(
        type="FCNMaskHead", num_convs=2, in_channels=16, conv_out_channels=16, num_classes=NUM_CLASSES
    )
    cfg["test_cfg"]["rcnn"]["mask_thr_binary"] = 0.5
    return cfg


DENSE_TEST_CFG = dict(
    nms_pre=200, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=50
)


def _one_stage_cfg(detector: str, head: dict, depth: int = 18) -> dict:
    """A tiny one-stage detector: ResNet, a 16-channel FPN with five levels, `head` (GroupNorm towers of two
    convs, four groups)."""
    return dict(
        type=detector,
        backbone=backbone_cfg(depth),
        neck=dict(
            type="FPN",
            in_channels=stage_channels(depth),
            out_channels=16,
            start_level=1,
            add_extra_convs="on_output",
            num_outs=5,
            relu_before_extra_convs=True,
        ),
        bbox_head=dict(
            num_classes=NUM_CLASSES,
            in_channels=16,
            stacked_convs=2,
            feat_channels=16,
            norm_cfg=dict(type="GN", num_groups=4, requires_grad=True),
            **head,
        ),
        train_cfg=None,
        test_cfg=dict(DENSE_TEST_CFG),
    )


def fcos_cfg(norm_on_bbox: bool = True, depth: int = 18) -> dict:
    """FCOS with the head options of configs/tiny/fcos_tiny_synth.py (`norm_on_bbox`, centerness on the
    regression tower); `norm_on_bbox=False` gives the plain FCOS head (exp of the distances, centerness on the
    classification tower)."""
    head = dict(type="FCOSHead", strides=[8, 16, 32, 64, 128], norm_on_bbox=norm_on_bbox)
    if norm_on_bbox:
        head.update(centerness_on_reg=True, center_sampling=True, conv_bias=True)
    return _one_stage_cfg("FCOS", head, depth)


def atss_cfg(depth: int = 18) -> dict:
    return _one_stage_cfg("ATSS", dict(type="ATSSHead"), depth)


def gfl_cfg(depth: int = 18) -> dict:
    return _one_stage_cfg("GFL", dict(type="GFLHead", reg_max=8), depth)


def resnext_backbone_cfg() -> tuple[dict, list]:
    """A narrow ResNeXt-50 (4 groups of width 4 per stage base) and its stage channels."""
    backbone = dict(backbone_cfg(50), type="ResNeXt", groups=4, base_width=4, base_channels=8)
    return backbone, [32, 64, 128, 256]


def regnet_backbone_cfg() -> tuple[dict, list]:
    """A RegNetX of four narrow stages (widths 16, 24, 32, 56; 8 channels per group) and its stage channels."""
    backbone = dict(
        type="RegNet",
        arch=dict(w0=16, wa=8, wm=1.5, group_w=8, depth=5, bot_mul=1.0),
        stem_channels=8,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=False,
    )
    return backbone, [16, 24, 32, 56]


def with_backbone(model_cfg: dict, backbone: tuple[dict, list]) -> dict:
    """`model_cfg` with another backbone (config, stage channels) feeding its FPN."""
    cfg = copy.deepcopy(model_cfg)
    cfg["backbone"], cfg["neck"]["in_channels"] = copy.deepcopy(backbone[0]), list(backbone[1])
    return cfg


def fused_detector(model_cfg: dict, seed: int = 0) -> torch.nn.Module:
    """A random-init detector with BatchNorm statistics made non-trivial, then folded."""
    torch.manual_seed(seed)
    model = build_detector(copy.deepcopy(model_cfg))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return fuse_conv_bn(model.eval())


def q_config(w_bit: int = 4, a_bit: int = 4, quant_head: bool = False, **recon) -> dict:
    """The quantizers of exp/config.yaml (AdaRound weights, LSQ activations) with min/max observers (the MSE
    searches cost seconds on a busy CPU)."""
    config = dict(
        a_qconfig=dict(
            quantizer="LSQFakeQuantize", observer="AvgMinMaxObserver", bit=a_bit, symmetric=False, ch_axis=-1
        ),
        w_qconfig=dict(
            quantizer="AdaRoundFakeQuantize", observer="MinMaxObserver", bit=w_bit, symmetric=False, ch_axis=0
        ),
        calibrate=4,
        recon=dict(
            batch_size=2,
            scale_lr=4.0e-5,
            warm_up=0.2,
            weight=0.01,
            iters=20,
            b_range=[20, 2],
            keep_gpu=False,
            round_mode="learned_hard_sigmoid",
            drop_prob=0.5,
        ),
    )
    config["recon"].update(recon)
    if quant_head:
        config["quant_head"] = True
    return config


def random_batches(num_batches: int = 2, height: int = 64, width: int = 96, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [{"img": torch.randn(2, 3, height, width, generator=generator)} for _ in range(num_batches)]


def image_meta(height: int, width: int) -> dict:
    """The test-time meta of an unscaled, unpadded (height, width) image."""
    shape = (height, width, 3)
    return dict(
        img_shape=shape,
        ori_shape=shape,
        pad_shape=shape,
        scale_factor=np.ones(4, dtype=np.float32),
        flip=False,
        batch_input_shape=(height, width),
    )


def write_tiny_config(path: Path, data_root: Path, model_cfg: Optional[dict] = None) -> Path:
    """An mmdetection config file for the tiny RetinaNet on a synthetic data set at `data_root` (small images)."""
    model_cfg = model_cfg or retinanet_cfg(18)
    norm = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
    scale = (96, 64)
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="Resize", img_scale=scale, keep_ratio=True),
        dict(type="RandomFlip", flip_ratio=0.5),
        dict(type="Normalize", **norm),
        dict(type="Pad", size_divisor=32),
        dict(type="DefaultFormatBundle"),
        dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"]),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(
            type="MultiScaleFlipAug",
            img_scale=scale,
            flip=False,
            transforms=[
                dict(type="Resize", keep_ratio=True),
                dict(type="RandomFlip"),
                dict(type="Normalize", **norm),
                dict(type="Pad", size_divisor=32),
                dict(type="ImageToTensor", keys=["img"]),
                dict(type="Collect", keys=["img"]),
            ],
        ),
    ]
    classes = ("circle", "rectangle", "triangle", "star", "cross", "crescent")
    root = str(data_root) + "/"

    def split(name: str, pipeline: list) -> dict:
        return dict(
            type="CocoDataset",
            classes=classes,
            ann_file=f"{root}annotations/instances_{name}.json",
            img_prefix=f"{root}{name}/",
            pipeline=pipeline,
        )

    config = dict(
        model=model_cfg,
        data_root=root,
        data=dict(
            samples_per_gpu=2,
            workers_per_gpu=0,
            train=split("train2017", train_pipeline),
            val=split("val2017", test_pipeline),
            test=split("val2017", test_pipeline),
        ),
        evaluation=dict(interval=1, metric="bbox"),
    )
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in config.items()))
    return path


def write_tiny_run(root: Path, settings: dict, num_train: int = 8, num_val: int = 4) -> tuple:
    """Synthetic data, a config, a random-weight tiny RetinaNet checkpoint and a q_config file under `root`, for runs of
    quant_coco.py: returns (config path, checkpoint path, q_config path)."""
    make_synthetic_coco(root / "data", num_train=num_train, num_val=num_val, seed=0)
    config = write_tiny_config(root / "retinanet_tiny.py", root / "data")
    torch.manual_seed(0)
    checkpoint = root / "retinanet_tiny.pth"
    save_checkpoint(build_detector(retinanet_cfg(18)), str(checkpoint))
    q_path = root / "q.yaml"
    q_path.write_text(yaml.safe_dump(settings))
    return config, checkpoint, q_path


def quant_coco_argv(config, checkpoint, q_path, work_dir, *extra: str, launcher: str = "none") -> list:
    """The published command line of quant_coco.py for the given files, plus `extra` arguments."""
    return [
        str(config),
        str(checkpoint),
        "--launcher",
        launcher,
        "--work-dir",
        str(work_dir),
        "--fuse-conv-bn",
        "--eval",
        "bbox",
        "--q_config",
        str(q_path),
        *extra,
    ]


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_quant_coco_argv(config, checkpoint, q_path, work_dir, repo_root: Path) -> list:
    """quant_coco.py under torchrun with two processes (`--launcher pytorch`) on a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(repo_root / "qdrop/solver/quant_coco.py"),
        *quant_coco_argv(config, checkpoint, q_path, work_dir, launcher="pytorch"),
    ]

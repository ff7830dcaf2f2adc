"""The four COCO configs resolve (read as data, with `_base_`) to mmdetection 2.28's values."""

from pathlib import Path

import pytest

from mmdet.utils import load_config

REPO_ROOT = Path(__file__).resolve().parents[3]

CONFIGS = {
    "faster_r50": "configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py",
    "faster_r101": "configs/faster_rcnn/faster_rcnn_r101_fpn_2x_coco.py",
    "retina_r50": "configs/retinanet/retinanet_r50_fpn_2x_coco.py",
    "retina_r101": "configs/retinanet/retinanet_r101_fpn_2x_coco.py",
}


@pytest.fixture(scope="module")
def cfgs():
    return {name: load_config(str(REPO_ROOT / path)) for name, path in CONFIGS.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_backbone_and_shared_values(cfgs, name):
    cfg = cfgs[name]
    depth = 101 if name.endswith("r101") else 50
    assert cfg.model.type == ("FasterRCNN" if name.startswith("faster") else "RetinaNet")
    assert cfg.model.backbone == dict(
        type="ResNet",
        depth=depth,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=True,
        style="pytorch",
        init_cfg=dict(type="Pretrained", checkpoint=f"torchvision://resnet{depth}"),
    )
    assert cfg.data_root == "data/coco/"
    assert cfg.img_norm_cfg == dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
    assert cfg.data.samples_per_gpu == 2 and cfg.data.workers_per_gpu == 2
    assert cfg.data.train.ann_file == "data/coco/annotations/instances_train2017.json"
    assert cfg.data.test.img_prefix == "data/coco/val2017/"
    assert cfg.data.val.pipeline[1].img_scale == (1333, 800)
    assert [t["type"] for t in cfg.train_pipeline] == [
        "LoadImageFromFile",
        "LoadAnnotations",
        "Resize",
        "RandomFlip",
        "Normalize",
        "Pad",
        "DefaultFormatBundle",
        "Collect",
    ]
    assert cfg.evaluation == dict(interval=1, metric="bbox")
    lr = 0.02 if name.startswith("faster") else 0.01
    assert cfg.optimizer == dict(type="SGD", lr=lr, momentum=0.9, weight_decay=1e-4)
    assert cfg.lr_config == dict(policy="step", warmup="linear", warmup_iters=500, warmup_ratio=0.001, step=[16, 22])
    assert cfg.runner == dict(type="EpochBasedRunner", max_epochs=24)
    assert cfg.checkpoint_config.interval == 1 and cfg.log_config.interval == 50
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    assert cfg.workflow == [("train", 1)] and cfg.load_from is None


@pytest.mark.parametrize("name", ["faster_r50", "faster_r101"])
def test_faster_rcnn_heads_and_cfgs(cfgs, name):
    model = cfgs[name].model
    assert model.neck == dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5)
    assert model.rpn_head.anchor_generator == dict(
        type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]
    )
    bbox_head = model.roi_head.bbox_head
    assert bbox_head.type == "Shared2FCBBoxHead" and bbox_head.num_classes == 80 and bbox_head.fc_out_channels == 1024
    assert bbox_head.bbox_coder.target_stds == [0.1, 0.1, 0.2, 0.2]
    assert model.roi_head.bbox_roi_extractor.roi_layer == dict(type="RoIAlign", output_size=7, sampling_ratio=0)
    assert model.test_cfg.rpn == dict(
        nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0
    )
    assert model.test_cfg.rcnn == dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)
    assert model.train_cfg.rpn_proposal.nms_pre == 2000
    assert model.train_cfg.rpn.assigner.pos_iou_thr == 0.7 and model.train_cfg.rpn.sampler.num == 256
    assert model.train_cfg.rcnn.assigner.match_low_quality is False
    assert model.train_cfg.rcnn.sampler == dict(
        type="RandomSampler", num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True
    )


@pytest.mark.parametrize("name", ["retina_r50", "retina_r101"])
def test_retinanet_head_and_cfgs(cfgs, name):
    model = cfgs[name].model
    assert model.neck == dict(
        type="FPN",
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        start_level=1,
        add_extra_convs="on_input",
        num_outs=5,
    )
    head = model.bbox_head
    assert (head.num_classes, head.stacked_convs, head.feat_channels) == (80, 4, 256)
    assert head.anchor_generator.octave_base_scale == 4 and head.anchor_generator.strides == [8, 16, 32, 64, 128]
    assert head.loss_cls == dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
    assert model.test_cfg == dict(
        nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100
    )
    assert model.train_cfg.assigner == dict(
        type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1
    )

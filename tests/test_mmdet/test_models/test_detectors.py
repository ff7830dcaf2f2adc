"""Detectors built from the COCO configs: state-dict keys, shapes and counts of mmdetection's checkpoints, and the
forward API on narrow models."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmdet.models import FasterRCNN, RetinaNet, build_detector
from mmdet.utils import load_config

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIGS = {
    "faster_r50": "configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py",
    "faster_r101": "configs/faster_rcnn/faster_rcnn_r101_fpn_2x_coco.py",
    "retina_r50": "configs/retinanet/retinanet_r50_fpn_2x_coco.py",
    "retina_r101": "configs/retinanet/retinanet_r101_fpn_2x_coco.py",
}
# mmdetection 2.28 model-zoo checkpoints: entries, entries without num_batches_tracked, parameters, backbone parameters
COUNTS = {
    "faster_r50": (348, 295, 41_753_056, 23_508_032),
    "faster_r101": (654, 550, 60_745_184, 42_500_160),
    "retina_r50": (354, 301, 37_968_692, 23_508_032),
    "retina_r101": (660, 556, 56_960_820, 42_500_160),
}
FASTER_SHAPES = {
    "backbone.conv1.weight": (64, 3, 7, 7),
    "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "neck.lateral_convs.3.conv.weight": (256, 2048, 1, 1),
    "neck.fpn_convs.3.conv.weight": (256, 256, 3, 3),
    "rpn_head.rpn_conv.weight": (256, 256, 3, 3),
    "rpn_head.rpn_cls.weight": (3, 256, 1, 1),
    "rpn_head.rpn_reg.weight": (12, 256, 1, 1),
    "roi_head.bbox_head.shared_fcs.0.weight": (1024, 12544),
    "roi_head.bbox_head.shared_fcs.1.weight": (1024, 1024),
    "roi_head.bbox_head.fc_cls.weight": (81, 1024),
    "roi_head.bbox_head.fc_reg.weight": (320, 1024),
}
RETINA_SHAPES = {
    "neck.lateral_convs.0.conv.weight": (256, 512, 1, 1),
    "neck.fpn_convs.3.conv.weight": (256, 2048, 3, 3),
    "neck.fpn_convs.4.conv.weight": (256, 256, 3, 3),
    "bbox_head.cls_convs.3.conv.weight": (256, 256, 3, 3),
    "bbox_head.reg_convs.0.conv.bias": (256,),
    "bbox_head.retina_cls.weight": (720, 256, 3, 3),
    "bbox_head.retina_reg.weight": (36, 256, 3, 3),
}


def _load_cfg(name: str) -> Config:
    return load_config(str(REPO_ROOT / CONFIGS[name]))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_matches_the_model_zoo(name):
    cfg = _load_cfg(name)
    with torch.device("meta"):  # structure only: no memory, no initialisation cost
        model = build_detector(cfg.model)
    state = model.state_dict()
    entries, without_nbt, params, backbone_params = COUNTS[name]
    assert len(state) == entries
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == without_nbt
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(p.numel() for p in model.backbone.parameters()) == backbone_params
    expected = FASTER_SHAPES if name.startswith("faster") else RETINA_SHAPES
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    prefixes = {k.split(".")[0] for k in state}
    heads = {"rpn_head", "roi_head"} if name.startswith("faster") else {"bbox_head"}
    assert prefixes == {"backbone", "neck"} | heads
    depth = 101 if name.endswith("r101") else 50
    assert ("backbone.layer3.22.conv3.weight" in state) == (depth == 101)


def test_head_cfgs_are_passed_down():
    cfg = _load_cfg("faster_r50")
    model = build_detector(_narrow(cfg.model))
    assert model.rpn_head.test_cfg == cfg.model.test_cfg.rpn and model.rpn_head.train_cfg == cfg.model.train_cfg.rpn
    assert model.roi_head.test_cfg == cfg.model.test_cfg.rcnn and model.roi_head.train_cfg == cfg.model.train_cfg.rcnn
    assert model.with_rpn and model.with_roi_head and model.with_neck and model.with_bbox
    retina_cfg = _load_cfg("retina_r50")
    retina = build_detector(_narrow(retina_cfg.model))
    assert retina.bbox_head.test_cfg == retina_cfg.model.test_cfg
    assert retina.bbox_head.train_cfg == retina_cfg.model.train_cfg
    test_only = copy.deepcopy(retina_cfg.model)
    test_only.train_cfg = None
    assert build_detector(_narrow(test_only)).bbox_head.train_cfg is None


def _narrow(model_cfg):
    """The same detector with a ResNet-18 (base 8) and 16-channel FPN/heads: fast, same code paths."""
    cfg = copy.deepcopy(model_cfg)
    cfg.backbone.update(depth=18, base_channels=8, init_cfg=None)
    cfg.neck.update(in_channels=[8, 16, 32, 64], out_channels=16)
    if "rpn_head" in cfg:
        cfg.rpn_head.update(in_channels=16, feat_channels=16)
        cfg.roi_head.bbox_roi_extractor.out_channels = 16
        cfg.roi_head.bbox_head.update(in_channels=16, fc_out_channels=32)
    else:
        cfg.bbox_head.update(in_channels=16, feat_channels=16, stacked_convs=2)
    return cfg


def _batch(num_images: int = 2, height: int = 128, width: int = 160):
    img = torch.randn(num_images, 3, height, width)
    metas = [
        dict(
            img_shape=(height - 8 * i, width - 16 * i, 3),
            ori_shape=(height // 2, width // 2, 3),
            pad_shape=(height, width, 3),
            scale_factor=np.array([2.0, 2.0, 2.0, 2.0], dtype=np.float32),
            flip=False,
            flip_direction=None,
        )
        for i in range(num_images)
    ]
    gt_bboxes = [torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 120.0, 100.0]]) for _ in range(num_images)]
    gt_labels = [torch.tensor([3, 17]) for _ in range(num_images)]
    return img, metas, gt_bboxes, gt_labels


@pytest.mark.parametrize("name", ["faster_r50", "retina_r50"])
def test_simple_test_and_forward_dispatch(name):
    model = build_detector(_narrow(_load_cfg(name).model)).eval()
    assert isinstance(model, FasterRCNN if name.startswith("faster") else RetinaNet)
    img, metas, _, _ = _batch()
    with torch.no_grad():
        feats = model.extract_feat(img)
        results = model(img=img, img_metas=metas, return_loss=False, rescale=True)
        wrapped = model([img[:1]], [metas[:1]], return_loss=False, rescale=True)
    strides = [4, 8, 16, 32, 64] if name.startswith("faster") else [8, 16, 32, 64, 128]
    assert [tuple(f.shape[2:]) for f in feats] == [(-(-128 // s), -(-160 // s)) for s in strides]
    assert all(m["batch_input_shape"] == (128, 160) for m in metas)
    assert len(results) == 2 and len(wrapped) == 1
    for per_image in results:
        assert len(per_image) == 80
        assert all(a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 5 for a in per_image)
    with pytest.raises(NotImplementedError, match="augmentation"):
        model([img, img], [metas, metas], return_loss=False)


@pytest.mark.parametrize("name", ["faster_r50", "retina_r50"])
def test_forward_train_losses_and_train_step(name):
    model = build_detector(_narrow(_load_cfg(name).model)).train()
    img, metas, gt_bboxes, gt_labels = _batch()
    losses = model(img, metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels)
    two_stage = name.startswith("faster")
    expected = {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"} if two_stage else {"loss_cls", "loss_bbox"}
    assert expected <= set(losses)
    outputs = model.train_step(dict(img=img, img_metas=metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels))
    assert outputs["num_samples"] == 2 and outputs["loss"].requires_grad
    assert outputs["log_vars"]["loss"] == pytest.approx(float(outputs["loss"].detach()), rel=1e-5)
    outputs["loss"].backward()
    assert model.backbone.layer4[0].conv1.weight.grad is not None
    assert model.backbone.conv1.weight.grad is None  # frozen_stages=1 from the config

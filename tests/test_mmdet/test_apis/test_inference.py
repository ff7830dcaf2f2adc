"""init_detector / inference_detector and the checkpoint evaluation of tools/test.py, end to end on a tiny RetinaNet
(CPU, seconds)."""

import json
import os
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers.coco_files import ann, write_tiny_coco
from mmdet.apis import inference_detector, init_detector
from mmdet.utils import save_checkpoint
from qdrop.cli.test import main as evaluate_checkpoint

TINY_CONFIG = """
classes = ('cat', 'dog', 'bird')
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(96, 64), flip=False, transforms=[
        dict(type='Resize', keep_ratio=True),
        dict(type='RandomFlip'),
        dict(type='Normalize', **img_norm_cfg),
        dict(type='Pad', size_divisor=32),
        dict(type='ImageToTensor', keys=['img']),
        dict(type='Collect', keys=['img']),
    ]),
]
data = dict(samples_per_gpu=1, workers_per_gpu=0,
            test=dict(type='CocoDataset', classes=classes, ann_file='{root}/ann.json', img_prefix='{root}/imgs',
                      pipeline=test_pipeline))
evaluation = dict(interval=1, metric='bbox')
model = dict(
    type='RetinaNet',
    backbone=dict(type='ResNet', depth=18, base_channels=8, num_stages=4, out_indices=(0, 1, 2, 3),
                  frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch',
                  init_cfg=None),
    neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=8, start_level=1, add_extra_convs='on_input',
              num_outs=5),
    bbox_head=dict(
        type='RetinaHead', num_classes=3, in_channels=8, stacked_convs=1, feat_channels=8,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                 ignore_iof_thr=-1), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=20))
"""


@pytest.fixture
def tiny_setup(tmp_path):
    images = [dict(id=1, file_name="a.png", width=80, height=60), dict(id=2, file_name="b.png", width=60, height=70)]
    write_tiny_coco(
        tmp_path,
        images,
        [ann(1, 1, [5, 5, 30, 30], 7), ann(2, 2, [10, 10, 20, 40], 2)],
        categories=[dict(id=7, name="cat"), dict(id=2, name="dog"), dict(id=11, name="bird")],
    )
    config = tmp_path / "tiny_retinanet.py"
    config.write_text(TINY_CONFIG.replace("{root}", tmp_path.as_posix()))
    return tmp_path, config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_result(result, num_classes=3):
    assert isinstance(result, list) and len(result) == num_classes
    for dets in result:
        assert isinstance(dets, np.ndarray) and dets.dtype == np.float32
        assert dets.ndim == 2 and dets.shape[1] == 5


def test_init_and_inference(tiny_setup):
    root, config = tiny_setup
    model = init_detector(str(config))
    assert not model.training and model.CLASSES == ("cat", "dog", "bird")
    result = inference_detector(model, str(root / "imgs" / "a.png"))
    _check_result(result)
    boxes = np.concatenate(result)
    assert len(boxes) > 0  # score_thr 0: something is always returned
    assert boxes[:, [0, 2]].max() <= 80 + 1e-3 and boxes[:, [1, 3]].max() <= 60 + 1e-3  # original pixels
    array = np.ascontiguousarray(np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8))
    batch = inference_detector(model, [array, array])
    assert len(batch) == 2
    for result in batch:
        _check_result(result)


def test_checkpoint_meta_classes_and_tools_test(tiny_setup):
    root, config = tiny_setup
    torch.manual_seed(0)
    model = init_detector(str(config))
    checkpoint = root / "tiny.pth"
    save_checkpoint(model, str(checkpoint), meta=dict(CLASSES=("c0", "c1", "c2")))
    reloaded = init_detector(str(config), str(checkpoint))
    assert reloaded.CLASSES == ("c0", "c1", "c2")
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name

    work_dir = root / "work"
    metric = evaluate_checkpoint(
        [
            str(config),
            str(checkpoint),
            "--eval",
            "bbox",
            "--work-dir",
            str(work_dir),
            "--out",
            str(root / "results.pkl"),
            "--fuse-conv-bn",
            "--cfg-options",
            "model.test_cfg.max_per_img=5",
        ]
    )
    assert set(metric) >= {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_copypaste"}
    eval_files = list(work_dir.glob("eval_*.json"))
    assert len(eval_files) == 1 and len(list(work_dir.glob("*.log"))) == 1
    dumped = json.loads(eval_files[0].read_text())
    assert dumped["config"] == str(config) and dumped["metric"] == metric
    with open(root / "results.pkl", "rb") as f:
        results = pickle.load(f)
    assert len(results) == 2 and all(len(np.concatenate(r)) <= 5 for r in results)

    # The torchrun wrapper: one process, the 'pytorch' launcher, the same metrics.
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()))
    run = subprocess.run(
        [
            "bash",
            "tools/dist_test.sh",
            str(config),
            str(checkpoint),
            "1",
            "--eval",
            "bbox",
            "--fuse-conv-bn",
            "--work-dir",
            str(root / "dist"),
            "--cfg-options",
            "model.test_cfg.max_per_img=5",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    dist_metric = json.loads(next((root / "dist").glob("eval_*.json")).read_text())["metric"]
    assert dist_metric == metric

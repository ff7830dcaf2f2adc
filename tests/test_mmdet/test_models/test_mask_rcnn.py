"""Mask R-CNN: the zoo config's state dict, FCNMaskHead, mask pasting as mmdetection 2.28, mask targets and loss,
training and inference of narrow models, and the tiny synthetic config."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmdet.core import mask_target
from mmdet.core.bbox import AssignResult, SamplingResult
from mmdet.models import MaskRCNN, build_detector
from mmdet.models.builder import build_head, build_loss
from mmdet.models.roi_heads import FCNMaskHead, paste_masks_in_image
from mmdet.models.roi_heads.mask_heads import paste_mask_region
from mmdet.utils import load_config

REPO_ROOT = Path(__file__).resolve().parents[3]
ZOO_CONFIG = "configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py"
# mmdetection 2.28 mask_rcnn_r50_fpn_1x_coco: entries, entries without num_batches_tracked, parameters.
ZOO_COUNTS = (360, 307, 44_396_336)
MASK_HEAD_SHAPES = {
    **{f"roi_head.mask_head.convs.{i}.conv.weight": (256, 256, 3, 3) for i in range(4)},
    **{f"roi_head.mask_head.convs.{i}.conv.bias": (256,) for i in range(4)},
    "roi_head.mask_head.upsample.weight": (256, 256, 2, 2),
    "roi_head.mask_head.upsample.bias": (256,),
    "roi_head.mask_head.conv_logits.weight": (80, 256, 1, 1),
    "roi_head.mask_head.conv_logits.bias": (80,),
}
TEST_CFG = dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100, mask_thr_binary=0.5)


def _zoo_cfg() -> Config:
    return load_config(str(REPO_ROOT / ZOO_CONFIG))


# ----------------------------------------------------------------------------------------------- zoo config
def test_state_dict_matches_the_model_zoo():
    with torch.device("meta"):
        model = build_detector(_zoo_cfg().model)
        faster = build_detector(
            load_config(str(REPO_ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py")).model
        )
    assert isinstance(model, MaskRCNN) and model.with_mask and not faster.with_mask
    state = model.state_dict()
    entries, without_nbt, params = ZOO_COUNTS
    assert len(state) == entries
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == without_nbt
    assert sum(p.numel() for p in model.parameters()) == params
    # Faster R-CNN's keys and shapes plus exactly the mask head's.
    faster_state = faster.state_dict()
    assert set(state) - set(faster_state) == set(MASK_HEAD_SHAPES)
    assert set(faster_state) <= set(state)
    assert all(state[k].shape == faster_state[k].shape for k in faster_state)
    for key, shape in MASK_HEAD_SHAPES.items():
        assert tuple(state[key].shape) == shape, key


def test_zoo_config_values():
    cfg = _zoo_cfg()
    roi_head = cfg.model.roi_head
    assert cfg.model.type == "MaskRCNN" and roi_head.type == "StandardRoIHead"
    assert roi_head.mask_roi_extractor == dict(
        type="SingleRoIExtractor",
        roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0),
        out_channels=256,
        featmap_strides=[4, 8, 16, 32],
    )
    assert roi_head.mask_head == dict(
        type="FCNMaskHead",
        num_convs=4,
        in_channels=256,
        conv_out_channels=256,
        num_classes=80,
        loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0),
    )
    rcnn = cfg.model.train_cfg.rcnn
    assert rcnn.mask_size == 28 and rcnn.assigner.match_low_quality is True and rcnn.sampler.num == 512
    assert cfg.model.test_cfg.rcnn == TEST_CFG
    assert cfg.train_pipeline[1] == dict(type="LoadAnnotations", with_bbox=True, with_mask=True)
    assert cfg.train_pipeline[-1] == dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels", "gt_masks"])
    assert cfg.evaluation == dict(metric=["bbox", "segm"])
    assert cfg.optimizer == dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=1e-4)
    assert cfg.lr_config.step == [8, 11] and cfg.runner.max_epochs == 12


# ----------------------------------------------------------------------------------------------- mask head
def _mask_head(**kw) -> FCNMaskHead:
    cfg = dict(type="FCNMaskHead", num_convs=4, in_channels=8, conv_out_channels=8, num_classes=3)
    cfg.update(kw)
    return build_head(cfg)


def test_mask_head_forward_is_convs_deconv_relu_logits():
    head = _mask_head()
    assert isinstance(head.upsample, torch.nn.ConvTranspose2d)
    assert head.upsample.kernel_size == (2, 2) and head.upsample.stride == (2, 2)
    assert all(conv.conv.bias is not None and conv.norm is None for conv in head.convs)
    assert all(float(layer.bias.detach().abs().sum()) == 0 for layer in (head.upsample, head.conv_logits))
    x = torch.randn(5, 8, 14, 14)
    out = head(x)
    assert out.shape == (5, 3, 28, 28)
    y = x
    for conv in head.convs:
        y = F.relu(F.conv2d(y, conv.conv.weight, conv.conv.bias, padding=1))
    y = F.relu(F.conv_transpose2d(y, head.upsample.weight, head.upsample.bias, stride=2))
    torch.testing.assert_close(out, F.conv2d(y, head.conv_logits.weight, head.conv_logits.bias))
    assert _mask_head(class_agnostic=True)(x).shape == (5, 1, 28, 28)
    assert _mask_head(num_convs=0, upsample_cfg=dict(type="bilinear", scale_factor=2))(x).shape == (5, 3, 28, 28)
    with pytest.raises(ValueError, match="carafe"):
        _mask_head(upsample_cfg=dict(type="carafe", scale_factor=2))


# ----------------------------------------------------------------------------------------------- pasting
def _paste(mask: np.ndarray, box, height: int, width: int, threshold: float = 0.5) -> np.ndarray:
    masks = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None]
    boxes = torch.tensor([box], dtype=torch.float32)
    return paste_masks_in_image(masks, boxes, height, width, threshold)[0].numpy()


def _reference_values(mask: np.ndarray, box, height: int, width: int) -> np.ndarray:
    """Bilinear sampling with align_corners=False and zero padding, written out per pixel in float64."""
    mask_h, mask_w = mask.shape
    x1, y1, x2, y2 = box
    out = np.zeros((height, width))
    for r in range(height):
        sy = (((r + 0.5 - y1) / (y2 - y1) * 2 - 1 + 1) * mask_h - 1) / 2
        for c in range(width):
            sx = (((c + 0.5 - x1) / (x2 - x1) * 2 - 1 + 1) * mask_w - 1) / 2
            x0, y0 = math.floor(sx), math.floor(sy)
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < mask_h and 0 <= xx < mask_w:
                        out[r, c] += wy * wx * mask[yy, xx]
    return out


def _box_pixels(height: int, width: int, rows: slice, cols: slice) -> np.ndarray:
    out = np.zeros((height, width), dtype=bool)
    out[rows, cols] = True
    return out


def test_full_mask_in_an_integer_box_covers_exactly_the_box():
    ones = np.ones((28, 28))
    np.testing.assert_array_equal(_paste(ones, (2, 3, 7, 9), 10, 12), _box_pixels(10, 12, slice(3, 9), slice(2, 7)))


def test_known_mask_scaled_by_two_pastes_to_its_pixel_repeat():
    mask = np.zeros((28, 28))
    mask[:, :14] = 1  # left half
    mask[20:, :] = 1  # and a bottom band
    pasted = _paste(mask, (0, 0, 56, 56), 56, 56)
    np.testing.assert_array_equal(pasted, np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1).astype(bool))
    np.testing.assert_array_equal(_paste(mask, (0, 0, 28, 28), 28, 28), mask.astype(bool))
    # Shifted by (5, 3) into a larger canvas: the same pixels, shifted.
    shifted = _paste(mask, (5, 3, 33, 31), 40, 40)
    np.testing.assert_array_equal(shifted[3:31, 5:33], mask.astype(bool))
    assert shifted.sum() == mask.sum()


def test_boxes_at_the_border_are_cut_by_the_canvas():
    ones = np.ones((28, 28))
    np.testing.assert_array_equal(_paste(ones, (-3, -2, 5, 4), 10, 12), _box_pixels(10, 12, slice(0, 4), slice(0, 5)))
    np.testing.assert_array_equal(_paste(ones, (8, 6, 15, 13), 10, 12), _box_pixels(10, 12, slice(6, 10), slice(8, 12)))
    np.testing.assert_array_equal(_paste(ones, (0, 0, 12, 10), 10, 12), np.ones((10, 12), dtype=bool))


def test_boxes_smaller_than_a_pixel():
    ones = np.ones((28, 28))
    # Holding the centre (4.5, 4.5) of pixel (4, 4): that pixel only; holding no pixel centre: nothing.
    assert np.argwhere(_paste(ones, (4.2, 4.2, 4.8, 4.8), 10, 12)).tolist() == [[4, 4]]
    assert not _paste(ones, (4.6, 4.6, 4.9, 4.9), 10, 12).any()
    # Zero width and height: the infinite positions become 0 (the mask's centre), only in the one-pixel margin
    # around the box that mmdetection's CPU paste computes.
    assert np.argwhere(_paste(ones, (4.0, 4.0, 4.0, 4.0), 10, 12)).tolist() == [[3, 3], [3, 4], [4, 3], [4, 4]]
    zero_width = _paste(ones, (3.0, 2.0, 3.0, 6.0), 10, 12)
    np.testing.assert_array_equal(zero_width, _box_pixels(10, 12, slice(2, 6), slice(2, 4)))


def test_paste_matches_bilinear_reference_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(6):
        mask = rng.random((28, 28))
        x1, y1 = rng.uniform(-8, 30, size=2)
        w, h = rng.uniform(0.5, 40, size=2)
        box = (x1, y1, x1 + w, y1 + h)
        box32 = tuple(float(np.float32(v)) for v in box)
        reference = _reference_values(mask, box32, 40, 44)
        pasted = _paste(mask, box, 40, 44)
        decided = np.abs(reference - 0.5) > 1e-4
        np.testing.assert_array_equal(pasted[decided], reference[decided] >= 0.5)
        values, (rows, cols) = paste_mask_region(
            torch.tensor(mask, dtype=torch.float32)[None, None], torch.tensor([box], dtype=torch.float32), 40, 44
        )
        np.testing.assert_allclose(values[0].numpy(), reference[rows, cols], atol=1e-5)
        assert rows.start == max(math.floor(box32[1]) - 1, 0) and cols.stop == min(math.ceil(box32[2]) + 1, 44)
        soft = _paste(mask, box, 40, 44, threshold=-1)
        assert soft.dtype == np.uint8
        np.testing.assert_array_equal(soft[rows, cols], (values[0] * 255).to(torch.uint8).numpy())


def test_get_seg_masks_selects_the_label_channel_and_rescales():
    head = _mask_head()
    logits = torch.full((2, 3, 28, 28), -20.0)
    logits[0, 2] = 20.0  # detection 0 (label 2): full mask in its channel only
    logits[1, 0, :, :14] = 20.0  # detection 1 (label 0): left half
    boxes = torch.tensor([[8.0, 4.0, 36.0, 32.0], [0.0, 0.0, 56.0, 28.0]])  # network-input coordinates
    labels = torch.tensor([2, 0])
    scale = np.array([2.0, 2.0, 2.0, 2.0], dtype=np.float32)
    segms = head.get_seg_masks(logits, boxes, labels, TEST_CFG, (20, 30, 3), scale, rescale=True)
    assert [len(s) for s in segms] == [1, 0, 1]
    np.testing.assert_array_equal(segms[2][0], _box_pixels(20, 30, slice(2, 16), slice(4, 18)))
    np.testing.assert_array_equal(segms[0][0], _box_pixels(20, 30, slice(0, 14), slice(0, 14)))
    assert segms[0][0].dtype == bool
    unscaled = head.get_seg_masks(logits, boxes, labels, TEST_CFG, (20, 30, 3), scale, rescale=False)
    assert unscaled[2][0].shape == (40, 60)
    np.testing.assert_array_equal(unscaled[2][0], _box_pixels(40, 60, slice(4, 32), slice(8, 36)))


# ----------------------------------------------------------------------------------------------- training
def _sampling_result(proposals: torch.Tensor, gt_inds: torch.Tensor, gt_bboxes: torch.Tensor, labels: torch.Tensor):
    assign = AssignResult(len(gt_bboxes), gt_inds + 1, torch.ones(len(gt_inds)), labels[gt_inds])
    pos = torch.arange(len(gt_inds))
    flags = torch.zeros(len(gt_inds), dtype=torch.uint8)
    return SamplingResult(pos, pos[:0], proposals, gt_bboxes, assign, flags)


def test_mask_targets_are_roi_aligned_binarised_gt_masks():
    gt = np.zeros((2, 40, 60), dtype=np.uint8)
    gt[0, 10:30, 20:48] = 1  # rows 10-29, columns 20-47
    gt[1, :, :30] = 1  # left half of the canvas
    proposals = torch.tensor(
        [
            [20.0, 10.0, 48.0, 30.0],  # exactly gt 0's box: all ones
            [20.0, 10.0, 76.0, 30.0],  # twice as wide (clipped to x = 60): the gt covers 28 of 40 columns
            [0.0, 0.0, 60.0, 40.0],  # the whole canvas against gt 1: left half
        ]
    )
    gt_inds = torch.tensor([0, 0, 1])
    cfg = dict(mask_size=28)
    targets = mask_target([proposals], [gt_inds], [gt], cfg)
    assert targets.shape == (3, 28, 28) and targets.dtype == torch.float32
    assert bool((targets[0] == 1).all())
    columns = targets[1].mean(dim=0)
    assert bool((targets[1] == columns).all())  # every row alike
    assert int(columns.sum()) == 20 and bool((columns[:20] == 1).all())  # 28 / 40 * 28 = 19.6 -> 20 at >= 0.5
    np.testing.assert_array_equal(targets[2].numpy(), np.repeat([[1.0] * 14 + [0.0] * 14], 28, axis=0))
    soft = mask_target([proposals], [gt_inds], [torch.from_numpy(gt)], dict(mask_size=28, soft_mask_target=True))
    assert 0 < float(soft[1, 0, 19]) < 1
    empty = mask_target([proposals[:0]], [gt_inds[:0]], [gt], cfg)
    assert empty.shape == (0, 28, 28)
    with pytest.raises(KeyError, match="mask_size"):
        mask_target([proposals], [gt_inds], [gt], {})


def test_loss_mask_is_bce_of_the_gt_class_channel():
    head = _mask_head()
    pred = torch.randn(4, 3, 28, 28, requires_grad=True)
    targets = (torch.rand(4, 28, 28) > 0.5).float()
    labels = torch.tensor([2, 0, 1, 2])
    loss = head.loss(pred, targets, labels)["loss_mask"]
    expected = F.binary_cross_entropy_with_logits(pred[torch.arange(4), labels], targets)
    assert loss.shape == (1,)
    torch.testing.assert_close(loss[0], expected)
    loss.sum().backward()
    assert float(pred.grad[0, 1].abs().sum()) == 0 and float(pred.grad[0, 2].abs().sum()) > 0
    empty = torch.zeros(0, 3, 28, 28, requires_grad=True)
    zero = head.loss(empty, torch.zeros(0, 28, 28), torch.zeros(0, dtype=torch.long))["loss_mask"]
    assert float(zero.detach()) == 0 and zero.requires_grad
    with pytest.raises(ValueError, match="use_sigmoid and use_mask"):
        build_loss(dict(type="CrossEntropyLoss", use_sigmoid=True, use_mask=True))


def test_mask_head_targets_from_sampling_results():
    head = _mask_head()
    gt_bboxes = torch.tensor([[20.0, 10.0, 48.0, 30.0]])
    result = _sampling_result(gt_bboxes.clone(), torch.tensor([0]), gt_bboxes, torch.tensor([1]))
    gt = np.zeros((1, 40, 60), dtype=np.uint8)
    gt[0, 10:30, 20:48] = 1
    targets = head.get_targets([result, result], [gt, gt], dict(mask_size=28))
    assert targets.shape == (2, 28, 28) and bool((targets == 1).all())


# ----------------------------------------------------------------------------------------------- detector
def _narrow(model_cfg):
    """The zoo Mask R-CNN with a ResNet-18 (base 8), 16-channel FPN and heads: fast, same code paths."""
    cfg = copy.deepcopy(model_cfg)
    cfg.backbone.update(depth=18, base_channels=8, init_cfg=None)
    cfg.neck.update(in_channels=[8, 16, 32, 64], out_channels=16)
    cfg.rpn_head.update(in_channels=16, feat_channels=16)
    cfg.roi_head.bbox_roi_extractor.out_channels = 16
    cfg.roi_head.bbox_head.update(in_channels=16, fc_out_channels=32)
    cfg.roi_head.mask_roi_extractor.out_channels = 16
    cfg.roi_head.mask_head.update(in_channels=16, conv_out_channels=16)
    return cfg


def _batch(num_images: int = 2, height: int = 128, width: int = 160):
    img = torch.randn(num_images, 3, height, width)
    metas = [
        dict(
            img_shape=(height - 8 * i, width - 16 * i, 3),
            ori_shape=(height // 2 - 4 * i, width // 2 - 8 * i, 3),
            pad_shape=(height, width, 3),
            scale_factor=np.array([2.0, 2.0, 2.0, 2.0], dtype=np.float32),
            flip=False,
            flip_direction=None,
        )
        for i in range(num_images)
    ]
    gt_bboxes = [torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 120.0, 100.0]]) for _ in range(num_images)]
    gt_labels = [torch.tensor([3, 17]) for _ in range(num_images)]
    gt_masks = []
    for boxes in gt_bboxes:
        masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1:y2, x1 : (x1 + x2) // 2] = 1  # the left half of each box
        gt_masks.append(masks)
    return img, metas, gt_bboxes, gt_labels, gt_masks


def test_training_losses_are_finite_and_reach_the_mask_head():
    model = build_detector(_narrow(_zoo_cfg().model)).train()
    img, metas, gt_bboxes, gt_labels, gt_masks = _batch()
    losses = model(img, metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels, gt_masks=gt_masks)
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc", "loss_mask"} <= set(losses)
    assert all(
        torch.isfinite(torch.as_tensor(v) if torch.is_tensor(v) else torch.stack(v)).all() for v in losses.values()
    )
    # With the ideal target of half a box everywhere, an untrained head's BCE is near log 2.
    assert 0.3 < float(losses["loss_mask"].detach()) < 2.0
    outputs = model.train_step(
        dict(img=img, img_metas=metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels, gt_masks=[m.numpy() for m in gt_masks])
    )
    outputs["loss"].backward()
    assert "loss_mask" in outputs["log_vars"]
    assert float(model.roi_head.mask_head.conv_logits.weight.grad.abs().sum()) > 0
    assert float(model.roi_head.mask_head.convs[0].conv.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="gt_masks"):
        model(img, metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels)


def test_inference_returns_boxes_and_masks_per_image():
    model = build_detector(_narrow(_zoo_cfg().model)).eval()
    model.roi_head.test_cfg = dict(TEST_CFG, score_thr=0.0)  # an untrained model: keep every detection
    img, metas, *_ = _batch()
    with torch.no_grad():
        results = model(img=img, img_metas=metas, return_loss=False, rescale=True)
    assert len(results) == 2
    for result, meta in zip(results, metas):
        assert isinstance(result, tuple) and len(result) == 2
        bboxes, segms = result
        assert len(bboxes) == len(segms) == 80
        assert sum(len(b) for b in bboxes) > 0
        for class_boxes, class_masks in zip(bboxes, segms):
            assert len(class_masks) == class_boxes.shape[0]
            for box, mask in zip(class_boxes, class_masks):
                assert mask.dtype == bool and mask.shape == tuple(meta["ori_shape"][:2])
                rows, cols = np.nonzero(mask)
                if rows.size:  # nothing outside the one-pixel margin of its (rescaled) box
                    assert cols.min() >= math.floor(box[0]) - 1 and cols.max() < math.ceil(box[2]) + 1
                    assert rows.min() >= math.floor(box[1]) - 1 and rows.max() < math.ceil(box[3]) + 1
    model.roi_head.test_cfg = dict(TEST_CFG, score_thr=1.1)  # nothing passes: empty lists per class
    with torch.no_grad():
        empty = model(img=img, img_metas=metas, return_loss=False, rescale=True)
    assert all(r[1] == [[] for _ in range(80)] and all(b.shape == (0, 5) for b in r[0]) for r in empty)


def test_mask_branch_may_share_the_box_extractor():
    cfg = _narrow(_zoo_cfg().model)
    cfg.roi_head.pop("mask_roi_extractor")
    cfg.roi_head.bbox_roi_extractor.roi_layer.output_size = 14
    cfg.roi_head.bbox_head.roi_feat_size = 14
    model = build_detector(cfg).train()
    assert model.roi_head.share_roi_extractor and model.roi_head.mask_roi_extractor is model.roi_head.bbox_roi_extractor
    img, metas, gt_bboxes, gt_labels, gt_masks = _batch()
    losses = model(img, metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels, gt_masks=gt_masks)
    assert torch.isfinite(losses["loss_mask"]).all()


def test_tiny_synthetic_config_builds_a_narrow_mask_rcnn():
    cfg = load_config(str(REPO_ROOT / "configs/tiny/mask_rcnn_tiny_synth.py"))
    model = build_detector(cfg.model)
    assert isinstance(model, MaskRCNN) and model.roi_head.mask_head.num_classes == 6
    assert model.roi_head.mask_head.conv_logits.weight.shape == (6, 32, 1, 1)
    assert cfg.evaluation.metric == ["bbox", "segm"]
    assert cfg.data.train.pipeline[1] == dict(type="LoadAnnotations", with_bbox=True, with_mask=True)
    assert "gt_masks" in cfg.data.train.pipeline[-1]["keys"]
    assert cfg.data.train.ann_file == "data/synthetic_coco/annotations/instances_train2017.json"

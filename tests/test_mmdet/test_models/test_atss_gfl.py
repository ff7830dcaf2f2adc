"""ATSS and GFL: zoo state-dict layout, anchors, Integral, test-time decoding and NMS order on hand-made outputs,
ATSSAssigner, QFL/DFL values, training on a tiny model, and inference of the detectors built from the configs."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdet.core import ATSSAssigner
from mmdet.models import ATSS, GFL, build_detector
from mmdet.models.builder import build_head, build_loss
from mmdet.models.dense_heads import ATSSHead, GFLHead, Integral
from mmdet.models.dense_heads.atss_head import anchor_centres, centerness_target
from mmdet.utils import load_config

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIGS = {"atss": "configs/atss/atss_r50_fpn_1x_coco.py", "gfl": "configs/gfl/gfl_r50_fpn_1x_coco.py"}
TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6), max_per_img=100)
TRAIN_CFG = dict(assigner=dict(type="ATSSAssigner", topk=9), allowed_border=-1, pos_weight=-1, debug=False)
# Spec section 10: state-dict entries, entries without num_batches_tracked, parameters (zoo R50 checkpoints).
COUNTS = {"atss": (369, 316, 32_295_322), "gfl": (368, 315, 32_440_537)}


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _assert_close(actual: torch.Tensor, expected, atol: float = 1e-4) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


def _meta(img_shape, scale=1.0, pad_shape=None):
    return dict(
        img_shape=(*img_shape, 3),
        ori_shape=(*img_shape, 3),
        pad_shape=(*(pad_shape or img_shape), 3),
        scale_factor=np.full(4, scale, dtype=np.float32),
    )


def _head_keys(name: str) -> dict[str, tuple[int, ...]]:
    """The zoo checkpoint's `bbox_head.*` keys and shapes (spec sections 3.1, 5.1, 6.1, 10)."""
    keys = {}
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            keys[f"bbox_head.{tower}.{i}.conv.weight"] = (256, 256, 3, 3)
            keys[f"bbox_head.{tower}.{i}.gn.weight"] = (256,)
            keys[f"bbox_head.{tower}.{i}.gn.bias"] = (256,)
    outputs = (
        {"atss_cls": 80, "atss_reg": 4, "atss_centerness": 1} if name == "atss" else {"gfl_cls": 80, "gfl_reg": 68}
    )
    for conv, channels in outputs.items():
        keys[f"bbox_head.{conv}.weight"] = (channels, 256, 3, 3)
        keys[f"bbox_head.{conv}.bias"] = (channels,)
    for level in range(5):
        keys[f"bbox_head.scales.{level}.scale"] = ()
    if name == "gfl":
        keys["bbox_head.integral.project"] = (17,)
    return keys


def _neck_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for i, channels in enumerate((512, 1024, 2048)):
        keys[f"neck.lateral_convs.{i}.conv.weight"] = (256, channels, 1, 1)
        keys[f"neck.lateral_convs.{i}.conv.bias"] = (256,)
    for i in range(5):
        keys[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
        keys[f"neck.fpn_convs.{i}.conv.bias"] = (256,)
    return keys


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_matches_the_model_zoo(name):
    cfg = load_config(str(REPO_ROOT / CONFIGS[name]))
    with torch.device("meta"):  # structure only
        model = build_detector(cfg.model)
    assert isinstance(model, ATSS if name == "atss" else GFL)
    state = model.state_dict()
    entries, without_nbt, params = COUNTS[name]
    assert len(state) == entries
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == without_nbt
    assert sum(p.numel() for p in model.parameters()) == params
    expected = {**_head_keys(name), **_neck_keys()}
    assert {k: tuple(v.shape) for k, v in state.items() if not k.startswith("backbone.")} == expected
    assert len([k for k in state if k.startswith("backbone.")]) == 318  # ResNet-50


def test_integral_project_buffer_is_saved_and_exact():
    head = build_head(dict(type="GFLHead", num_classes=3, in_channels=8, feat_channels=32, stacked_convs=1))
    project = head.state_dict()["integral.project"]
    assert project.dtype == torch.float32 and torch.equal(project, torch.arange(17, dtype=torch.float32))
    assert head.scales[0].scale.shape == () and float(head.scales[0].scale.detach()) == 1.0


def test_configs_match_mmdetection():
    """The values of mmdetection 2.28.2's configs of the same names (their `_base_` files resolved)."""
    for name, path in CONFIGS.items():
        cfg = load_config(str(REPO_ROOT / path))
        model = cfg.model
        assert model.type == {"atss": "ATSS", "gfl": "GFL"}[name]
        assert model.backbone == dict(
            type="ResNet",
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=1,
            norm_cfg=dict(type="BN", requires_grad=True),
            norm_eval=True,
            style="pytorch",
            init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet50"),
        )
        assert model.neck == dict(
            type="FPN",
            in_channels=[256, 512, 1024, 2048],
            out_channels=256,
            start_level=1,
            add_extra_convs="on_output",
            num_outs=5,
        )
        head = dict(model.bbox_head)
        assert head.pop("anchor_generator") == dict(
            type="AnchorGenerator", ratios=[1.0], octave_base_scale=8, scales_per_octave=1, strides=[8, 16, 32, 64, 128]
        )
        common = dict(num_classes=80, in_channels=256, stacked_convs=4, feat_channels=256)
        if name == "atss":
            assert head == dict(
                type="ATSSHead",
                **common,
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
                loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
                loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            )
        else:
            assert head == dict(
                type="GFLHead",
                **common,
                loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
                loss_dfl=dict(type="DistributionFocalLoss", loss_weight=0.25),
                reg_max=16,
                loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
            )
        assert model.train_cfg == TRAIN_CFG
        assert model.test_cfg == TEST_CFG
        assert cfg.optimizer == dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0001)
        assert cfg.lr_config == dict(policy="step", warmup="linear", warmup_iters=500, warmup_ratio=0.001, step=[8, 11])
        assert cfg.runner == dict(type="EpochBasedRunner", max_epochs=12)
        assert cfg.img_norm_cfg == dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)


# ----------------------------------------------------------------------------------------------------- anchors
def test_anchors_are_centred_on_stride_times_index():
    head = build_head(dict(type="ATSSHead", num_classes=3, in_channels=8, feat_channels=32, stacked_convs=1))
    sizes = [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]  # an 800 x 1088 input
    anchors = head.prior_generator.grid_priors(sizes)
    assert sum(a.size(0) for a in anchors) == 18_134
    assert anchors[0][0].tolist() == [-32.0, -32.0, 32.0, 32.0]
    assert anchors[0][5 * 136 + 10].tolist() == [48.0, 8.0, 112.0, 72.0]  # x = 10, y = 5 at stride 8
    for level, stride in enumerate([8, 16, 32, 64, 128]):
        width = sizes[level][1]
        centres = anchor_centres(anchors[level])
        sides = anchors[level][:, 2:] - anchors[level][:, :2]
        assert torch.all(sides == 8 * stride)
        assert centres[width + 3].tolist() == [3.0 * stride, 1.0 * stride]  # x = 3, y = 1: offset 0, not 0.5


# ----------------------------------------------------------------------------------------------------- Integral
def test_integral_on_hand_made_distributions():
    integral = Integral(16)
    far = -50.0  # exp(-50) ~ 2e-22: a zero probability
    logits = torch.full((3, 4, 17), far)
    logits[0, :, 5] = 0.0  # one-hot on bin 5 for every side
    logits[1, 0, 2] = logits[1, 0, 3] = 0.0  # left: half on bin 2, half on bin 3
    logits[1, 1, 0] = 0.0  # top: bin 0
    logits[1, 2, 16] = 0.0  # right: bin 16
    logits[1, 3, :] = 0.0  # bottom: uniform over 0..16
    logits[2, 0, 1] = math.log(3.0)  # left: 3/4 on bin 1, 1/4 on bin 9
    logits[2, 0, 9] = 0.0
    distances = integral(logits.reshape(3, 68))  # sides in blocks of 17: l, t, r, b
    # Row 2: left 1 * 3/4 + 9 * 1/4; the other sides are uniform (all logits equal).
    expected = [[5, 5, 5, 5], [2.5, 0, 16, 8], [3.0, 8, 8, 8]]
    _assert_close(distances, expected, atol=1e-5)
    assert integral(logits.reshape(3, 1, 68)).shape == (3, 1, 4)
    with pytest.raises(ValueError, match="4 \\* 17"):
        integral(torch.zeros(2, 64))


# ----------------------------------------------------------------------------------------------------- test path
def _raw_outputs(num_channels: int, img_hw=(128, 160), fill=-10.0):
    """Per level `(1, C, H, W)` tensors for an image padded to `img_hw`, strides 8..128."""
    sizes = [(-(-img_hw[0] // s), -(-img_hw[1] // s)) for s in (8, 16, 32, 64, 128)]
    return [torch.full((1, num_channels, h, w), fill) for h, w in sizes]


def test_atss_score_is_cls_prob_times_centerness_with_per_level_topk_and_nms():
    test_cfg = dict(TEST_CFG, nms_pre=2)
    head = build_head(
        dict(type="ATSSHead", num_classes=3, in_channels=8, feat_channels=32, stacked_convs=1, test_cfg=test_cfg)
    )
    cls_scores = _raw_outputs(3)
    bbox_preds = _raw_outputs(4, fill=0.0)
    centernesses = _raw_outputs(1, fill=0.0)  # sigmoid 0.5 unless set
    # Level 0 (stride 8, anchor side 64); (class, y, x).
    cls_scores[0][0, 0, 5, 9] = _logit(0.9)  # A: anchor (40, 8, 104, 72), centerness 0.5 -> 0.45
    cls_scores[0][0, 0, 5, 10] = _logit(0.8)  # B: spec 5.2's worked example, centerness 1 -> 0.8
    centernesses[0][0, 0, 5, 10] = 30.0
    bbox_preds[0][0, :, 5, 10] = torch.tensor([0.5, 0.0, 0.0, 0.0])  # dx = 0.05 * 64 -> (51.2, 8, 115.2, 72)
    cls_scores[0][0, 2, 5, 9] = _logit(0.7)  # C: third best of level 0, cut by nms_pre = 2
    cls_scores[0][0, 1, 0, 0] = _logit(0.04)  # D: below score_thr
    # Level 1 (stride 16, side 128).
    cls_scores[1][0, 2, 2, 2] = _logit(0.06)  # E: anchor (-32, -32, 96, 96) clipped; 0.06 * 0.5 = 0.03 stays
    cls_scores[1][0, 1, 5, 5] = _logit(0.5)  # F: kept by the threshold, centerness ~0 -> ~0, last
    centernesses[1][0, 0, 5, 5] = -30.0
    meta = _meta((128, 160))

    ((dets, labels),) = head.get_bboxes(cls_scores, bbox_preds, centernesses, img_metas=[meta])
    # A is suppressed by B (same class, IoU 0.70 > 0.6) although its class probability is higher: NMS uses the product.
    assert labels.tolist() == [0, 2, 1]
    _assert_close(dets[:2], [[51.2, 8, 115.2, 72, 0.8], [0, 0, 96, 96, 0.03]])
    assert 0 < float(dets[2, 4]) < 1e-9
    _assert_close(dets[2, :4], [80 - 64, 80 - 64, 80 + 64, 128])

    capped = head.get_bboxes(
        cls_scores,
        bbox_preds,
        centernesses,
        img_metas=[_meta((128, 160), scale=2.0)],
        cfg=dict(test_cfg, max_per_img=2),
        rescale=True,
    )
    ((dets, labels),) = capped
    assert labels.tolist() == [0, 2]
    _assert_close(dets, [[25.6, 4, 57.6, 36, 0.8], [0, 0, 48, 48, 0.03]])

    # The whole flow through the head's forward (raw outputs as lists) and simple_test.
    feats = [torch.randn(1, 8, h, w) for h, w in [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]]
    outs = head(feats)
    assert len(outs) == 3 and all(isinstance(o, list) and len(o) == 5 for o in outs)
    assert [tuple(o.shape[1:2]) for o in (outs[0][0], outs[1][0], outs[2][0])] == [(3,), (4,), (1,)]
    assert len(head.simple_test(feats, [meta])) == 1


def test_gfl_decodes_expected_bins_times_stride_around_the_anchor_centre():
    head = build_head(
        dict(type="GFLHead", num_classes=3, in_channels=8, feat_channels=32, stacked_convs=1, test_cfg=TEST_CFG)
    )
    cls_scores = _raw_outputs(3)
    bbox_preds = _raw_outputs(68, fill=0.0)
    far = -50.0

    def sides(level, y, x, bins):
        """Put each side's distribution on the given bins (equal weights)."""
        logits = torch.full((4, 17), far)
        for side, side_bins in enumerate(bins):
            logits[side, list(side_bins)] = 0.0
        bbox_preds[level][0, :, y, x] = logits.reshape(68)

    # Spec 6.3's example: stride 16, location (x=3, y=2), anchor centre (48, 32); left 2.5 bins = 40 px -> x1 = 8.
    cls_scores[1][0, 2, 2, 3] = _logit(0.7)
    sides(1, 2, 3, [(2, 3), (1,), (2,), (3,)])  # -> (48 - 40, 32 - 16, 48 + 32, 32 + 48)
    # Stride 8, location (0, 0), centre (0, 0): left 4 bins = 32 px and bottom 16 bins = 128 px get clipped.
    cls_scores[0][0, 0, 0, 0] = _logit(0.6)
    sides(0, 0, 0, [(4,), (0,), (16,), (16,)])
    ((dets, labels),) = head.get_bboxes(cls_scores, bbox_preds, img_metas=[_meta((120, 150))])
    assert labels.tolist() == [2, 0]
    # No score factor: the final score is the class probability.
    _assert_close(dets, [[8, 16, 80, 80, 0.7], [0, 0, 128, 120, 0.6]])
    ((dets, _),) = head.get_bboxes(cls_scores, bbox_preds, img_metas=[_meta((120, 150), scale=2.0)], rescale=True)
    _assert_close(dets[0], [4, 8, 40, 40, 0.7])

    feats = [torch.randn(1, 8, h, w) for h, w in [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]]
    outs = head(feats)
    assert len(outs) == 2 and all(isinstance(o, list) and len(o) == 5 for o in outs)
    assert outs[1][0].shape == (1, 68, 16, 20)


# ----------------------------------------------------------------------------------------------------- assigner
# One level of four 10 x 10 anchors in a row, one level of two 20 x 10 anchors.
ROW_ANCHORS = torch.tensor(
    [[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10], [0, 0, 20, 10], [20, 0, 40, 10]],
    dtype=torch.float32,
)


def _assign(gts, topk=2, labels=None):
    gts = torch.tensor(gts, dtype=torch.float32)
    return ATSSAssigner(topk=topk).assign(ROW_ANCHORS, [4, 2], gts, gt_labels=labels)


def test_atss_assigner_threshold_uses_the_unbiased_std():
    # gt (1, 0, 15, 10), centre (8, 5). Candidates (2 nearest per level): anchors 0, 1 (distances 3, 7) and 4, 5
    # (2, 22) with IoUs 0.6, 5/19, 0.7, 0. Mean 0.3908; unbiased std 0.3206 -> threshold 0.7114 > 0.7: no positive
    # (the biased std, 0.2777, would give 0.6685 and make anchor 4 positive).
    result = _assign([[1, 0, 15, 10]])
    assert result.gt_inds.tolist() == [0] * 6


def test_atss_assigner_centre_must_be_inside_by_more_than_001():
    # gt (x1, 0, 10, 10), centre ~ (7.5, 5); candidates 0, 1, 4, 5 with IoUs ~0.5, 0, 0.25, 0: threshold ~0.43, so
    # anchor 0 (IoU ~0.5, centre (5, 5)) is positive only if 5 - x1 > 0.01.
    assert _assign([[4.98, 0, 10, 10]]).gt_inds.tolist() == [1, 0, 0, 0, 0, 0]
    assert _assign([[4.995, 0, 10, 10]]).gt_inds.tolist() == [0] * 6


def test_atss_assigner_takes_the_gt_of_highest_iou():
    # Anchor 4 (0, 0, 20, 10) is positive for both gts: IoU 0.9 with (0, 0, 18, 10) (threshold 0.837) and 0.857 with
    # (2, 0, 21, 10) (threshold 0.792). The higher IoU wins whatever the gt order.
    gt_a, gt_b = [0, 0, 18, 10], [2, 0, 21, 10]
    result = _assign([gt_a, gt_b], labels=torch.tensor([7, 3]))
    assert result.gt_inds.tolist() == [0, 0, 0, 0, 1, 0]
    assert result.labels.tolist() == [-1, -1, -1, -1, 7, -1]
    assert float(result.max_overlaps[4]) == pytest.approx(0.9)
    assert _assign([gt_b, gt_a]).gt_inds.tolist() == [0, 0, 0, 0, 2, 0]
    # More candidates per level than anchors: all of the level; no gts: all negative.
    assert _assign([gt_a], topk=9).gt_inds.shape == (6,)
    empty = _assign(torch.zeros((0, 4)).tolist(), labels=torch.zeros(0, dtype=torch.long))
    assert empty.gt_inds.tolist() == [0] * 6 and empty.labels.tolist() == [-1] * 6


# ----------------------------------------------------------------------------------------------------- losses
def test_quality_focal_loss_values():
    loss = build_loss(dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0))
    pred = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    labels = torch.tensor([1, 2])  # row 0: class 1 with quality 0.8; row 1: background
    scores = torch.tensor([0.8, 0.0])

    def sig(x):
        return 1 / (1 + math.exp(-x))

    def bce(x, t):
        return -(t * math.log(sig(x)) + (1 - t) * math.log(1 - sig(x)))

    row0 = bce(0.0, 0) * sig(0.0) ** 2 + bce(1.0, 0.8) * abs(0.8 - sig(1.0)) ** 2
    row1 = bce(2.0, 0) * sig(2.0) ** 2 + bce(-1.0, 0) * sig(-1.0) ** 2
    per_sample = loss(pred, (labels, scores), reduction_override="none")
    assert per_sample.tolist() == pytest.approx([row0, row1], rel=1e-5)
    weighted = loss(pred, (labels, scores), weight=torch.tensor([1.0, 0.5]), avg_factor=2.0)
    assert float(weighted) == pytest.approx((row0 + 0.5 * row1) / 2.0, rel=1e-5)


def test_distribution_focal_loss_values():
    loss = build_loss(dict(type="DistributionFocalLoss", loss_weight=0.25))
    pred = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0]])
    target = torch.tensor([0.3, 1.5])
    # Row 0: uniform bins, CE = ln 3 for both neighbours (weights 0.7 and 0.3). Row 1: probabilities (1/4, 1/2, 1/4),
    # CE(1) = ln 2 and CE(2) = ln 4 with weights 0.5 each.
    rows = [math.log(3.0), 0.5 * math.log(2.0) + 0.5 * math.log(4.0)]
    assert loss(pred, target, reduction_override="none").tolist() == pytest.approx([0.25 * r for r in rows], rel=1e-5)
    value = loss(pred, target, weight=torch.tensor([1.0, 2.0]), avg_factor=4.0)
    assert float(value) == pytest.approx(0.25 * (rows[0] + 2 * rows[1]) / 4.0, rel=1e-5)


def test_centerness_target():
    anchors = torch.tensor([[0.0, 0.0, 20.0, 20.0]])  # centre (10, 10)
    gts = torch.tensor([[5.0, 2.0, 25.0, 30.0]])  # l 5, t 8, r 15, b 20
    assert centerness_target(anchors, gts).tolist() == pytest.approx([math.sqrt(5 / 15 * 8 / 20)])


# ----------------------------------------------------------------------------------------------------- training
def test_atss_targets_ignore_the_batch_padding():
    head = build_head(
        dict(type="ATSSHead", num_classes=3, in_channels=8, feat_channels=32, stacked_convs=1, train_cfg=TRAIN_CFG)
    )
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]  # batch padded to 64 x 96
    meta = _meta((60, 60), pad_shape=(64, 64))
    anchor_list, valid_list = head.get_anchors(sizes, [meta], "cpu")
    counts = [h * w for h, w in sizes]
    gt = torch.tensor([[30.0, 10.0, 90.0, 60.0]])  # reaches into the padding
    labels, label_weights, bbox_targets, num_pos = head.get_targets(
        anchor_list[0], valid_list, counts, [gt], [meta], None, [torch.tensor([2])]
    )
    labels, label_weights, bbox_targets = (torch.cat(t, dim=1)[0] for t in (labels, label_weights, bbox_targets))
    assert torch.equal(label_weights > 0, valid_list[0])
    positive = labels == 2
    assert num_pos == int(positive.sum()) >= 1 and torch.all(valid_list[0][positive])
    assert torch.all(bbox_targets[positive] == gt) and torch.all(bbox_targets[~positive] == 0)
    assert torch.all(labels[~positive] == 3)


def _one_positive_level():
    """A 1 x 2 level at stride 8 (anchor centres (0, 0) and (8, 0)), anchor 1 positive for class 1 of 3."""
    anchors = torch.tensor([[-32.0, -32.0, 32.0, 32.0], [-24.0, -32.0, 40.0, 32.0]])
    labels = torch.tensor([[3, 1]])
    label_weights = torch.ones(1, 2)
    bbox_targets = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [-40.0, -48.0, 88.0, 80.0]]])
    return anchors, labels, label_weights, bbox_targets


def test_atss_level_losses_on_one_positive():
    head = build_head(
        dict(type="ATSSHead", num_classes=3, in_channels=8, feat_channels=32, stacked_convs=1, train_cfg=TRAIN_CFG)
    )
    anchors, labels, label_weights, bbox_targets = _one_positive_level()
    zeros = [torch.zeros(1, c, 1, 2, requires_grad=True) for c in (3, 4, 1)]
    loss_cls, loss_bbox, loss_centerness, centerness_sum = head.loss_single(
        anchors, *zeros, labels, label_weights, bbox_targets, 1.0
    )
    # Zero deltas decode to the anchor (-24, -32, 40, 32), inside the gt: GIoU = IoU = 64^2 / 128^2 = 0.25. The
    # centerness target from the centre (8, 0): l = t = 48, r = b = 80 -> 0.6. GIoU loss 2 * 0.6 * 0.75 (avg 1).
    assert centerness_sum.item() == pytest.approx(0.6)
    assert loss_bbox.item() == pytest.approx(2.0 * 0.6 * 0.75, rel=1e-5)
    assert loss_centerness.item() == pytest.approx(math.log(2.0), rel=1e-5)  # BCE(logit 0, 0.6) = ln 2
    focal_neg, focal_pos = 0.75 * 0.25 * math.log(2.0), 0.25 * 0.25 * math.log(2.0)  # p = 0.5 for every element
    assert loss_cls.item() == pytest.approx(5 * focal_neg + focal_pos, rel=1e-5)


def test_gfl_level_losses_on_one_positive():
    head = build_head(
        dict(type="GFLHead", num_classes=3, in_channels=8, feat_channels=32, stacked_convs=1, train_cfg=TRAIN_CFG)
    )
    anchors, labels, label_weights, bbox_targets = _one_positive_level()
    cls_score = torch.zeros(1, 3, 1, 2, requires_grad=True)
    bbox_pred = torch.zeros(1, 68, 1, 2, requires_grad=True)  # uniform bins: 8 on every side
    loss_cls, loss_bbox, loss_dfl, weight_sum = head.loss_single(
        anchors, cls_score, bbox_pred, labels, label_weights, bbox_targets, 8, 1.0
    )
    # In stride units: centre (1, 0), prediction (-7, -8, 9, 8), gt (-5, -6, 11, 10): intersection 14 x 14 = 196,
    # union 316, enclosing 18 x 18 = 324. Quality weight max sigmoid(0) = 0.5.
    iou = 196 / 316
    giou = iou - (324 - 316) / 324
    assert weight_sum.item() == pytest.approx(0.5)
    assert loss_bbox.item() == pytest.approx(2.0 * 0.5 * (1 - giou), rel=1e-5)
    # DFL targets (6, 6, 10, 10) are whole bins: CE of a uniform 17-bin distribution, ln 17, per side.
    assert loss_dfl.item() == pytest.approx(0.25 * 4 * 0.5 * math.log(17.0) / 4.0, rel=1e-5)
    # QFL: every element BCE(0, 0) * 0.5^2 except the positive's class: BCE(0, iou) * |iou - 0.5|^2, and
    # BCE(logit 0, anything) = ln 2.
    expected_cls = 5 * math.log(2.0) * 0.25 + math.log(2.0) * (iou - 0.5) ** 2
    assert loss_cls.item() == pytest.approx(expected_cls, rel=1e-5)
    (loss_cls + loss_bbox + loss_dfl).backward()
    assert bbox_pred.grad is not None and cls_score.grad is not None


def _tiny(name: str):
    """The config's detector with a ResNet-18 (base 8), 32-channel FPN and a 2-conv head on 4 classes."""
    cfg = copy.deepcopy(load_config(str(REPO_ROOT / CONFIGS[name])).model)
    cfg.backbone.update(depth=18, base_channels=8, init_cfg=None)
    cfg.neck.update(in_channels=[8, 16, 32, 64], out_channels=32)
    cfg.bbox_head.update(num_classes=4, in_channels=32, feat_channels=32, stacked_convs=2)
    return build_detector(cfg)


def _batch():
    height, width = 128, 160
    img = torch.randn(2, 3, height, width)
    metas = [
        dict(
            img_shape=(height - 8 * i, width - 16 * i, 3),
            ori_shape=(height // 2, width // 2, 3),
            pad_shape=(height - 8 * i, width - 16 * i, 3),
            scale_factor=np.full(4, 2.0, dtype=np.float32),
        )
        for i in range(2)
    ]
    gt_bboxes = [torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 120.0, 100.0]]), torch.zeros((0, 4))]
    gt_labels = [torch.tensor([3, 1]), torch.zeros(0, dtype=torch.long)]
    return img, metas, gt_bboxes, gt_labels


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_losses_are_finite_for_a_few_steps(name):
    torch.manual_seed(0)
    model = _tiny(name).train()
    img, metas, gt_bboxes, gt_labels = _batch()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    expected = {"loss_cls", "loss_bbox", "loss_centerness" if name == "atss" else "loss_dfl"}
    for _ in range(3):
        losses = model(img, copy.deepcopy(metas), gt_bboxes=gt_bboxes, gt_labels=gt_labels)
        assert set(losses) == expected and all(len(v) == 5 for v in losses.values())
        outputs = model.train_step(
            dict(img=img, img_metas=copy.deepcopy(metas), gt_bboxes=gt_bboxes, gt_labels=gt_labels)
        )
        assert all(math.isfinite(v) for v in outputs["log_vars"].values())
        assert outputs["log_vars"]["loss_bbox"] > 0
        optimizer.zero_grad()
        outputs["loss"].backward()
        assert model.bbox_head.scales[0].scale.grad is not None
        optimizer.step()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_detectors_from_the_configs_run_inference(name):
    cfg = load_config(str(REPO_ROOT / CONFIGS[name]))
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    head = model.bbox_head
    assert isinstance(head, ATSSHead if name == "atss" else GFLHead)
    torch.nn.init.zeros_(getattr(head, head.cls_conv_name).bias)  # probabilities near 0.5: detections to post-process
    img = torch.randn(1, 3, 64, 96)
    meta = dict(
        img_shape=(60, 90, 3),
        ori_shape=(30, 45, 3),
        pad_shape=(64, 96, 3),
        scale_factor=np.full(4, 2.0, dtype=np.float32),
    )
    with torch.no_grad():
        results = model(img=[img], img_metas=[[meta]], return_loss=False, rescale=True)
    assert len(results) == 1 and len(results[0]) == 80
    assert all(a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 5 for a in results[0])
    dets = np.concatenate(results[0])
    assert 0 < len(dets) <= 100
    assert np.all(dets[:, [0, 2]] >= 0) and np.all(dets[:, [0, 2]] <= 45)
    assert np.all(dets[:, [1, 3]] >= 0) and np.all(dets[:, [1, 3]] <= 30)
    with torch.no_grad():
        raw = model.forward_dummy(img)
    assert len(raw) == (3 if name == "atss" else 2) and all(len(level) == 5 for level in raw)

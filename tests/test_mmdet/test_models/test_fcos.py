"""FCOS: points, distance coding, IoU losses, the generic dense test path, FCOSHead targets/losses, configs."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdet.core import DistancePointBBoxCoder, MlvlPointGenerator, bbox2distance, distance2bbox
from mmdet.models import FCOS, build_detector
from mmdet.models.builder import build_head, build_loss
from mmdet.models.dense_heads import FCOSHead
from mmdet.models.dense_heads.dense_test import dense_nms, filter_scores_and_topk
from mmdet.models.dense_heads.fcos_head import rename_legacy_fcos_keys
from mmdet.models.losses import sigmoid_focal_loss
from mmdet.models.utils import Scale
from mmdet.utils import load_config

REPO_ROOT = Path(__file__).resolve().parents[3]
EPS = torch.finfo(torch.float32).eps
CONFIGS = {
    "base": "configs/fcos/fcos_r50_caffe_fpn_gn-head_1x_coco.py",
    "giou": "configs/fcos/fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco.py",
}
# (state-dict entries, entries without num_batches_tracked, parameters), from the spec's derived model-zoo counts.
COUNTS = {"base": (369, 316, 32_295_322), "giou": (377, 324, 32_297_370)}
TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)


def zoo_head_shapes(conv_bias: bool) -> dict:
    """`bbox_head.*` keys and shapes of the zoo R50 FCOS (80 classes, 256 channels, 4 convs a tower, 5 levels)."""
    shapes = {}
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            shapes[f"bbox_head.{tower}.{i}.conv.weight"] = (256, 256, 3, 3)
            if conv_bias:
                shapes[f"bbox_head.{tower}.{i}.conv.bias"] = (256,)
            shapes[f"bbox_head.{tower}.{i}.gn.weight"] = (256,)
            shapes[f"bbox_head.{tower}.{i}.gn.bias"] = (256,)
    for name, out in (("conv_cls", 80), ("conv_reg", 4), ("conv_centerness", 1)):
        shapes[f"bbox_head.{name}.weight"] = (out, 256, 3, 3)
        shapes[f"bbox_head.{name}.bias"] = (out,)
    for level in range(5):
        shapes[f"bbox_head.scales.{level}.scale"] = ()
    return shapes


def zoo_neck_shapes() -> dict:
    shapes = {}
    for i, channels in enumerate((512, 1024, 2048)):
        shapes[f"neck.lateral_convs.{i}.conv.weight"] = (256, channels, 1, 1)
        shapes[f"neck.lateral_convs.{i}.conv.bias"] = (256,)
    for i in range(5):
        shapes[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
        shapes[f"neck.fpn_convs.{i}.conv.bias"] = (256,)
    return shapes


def load_cfg(name: str):
    return load_config(str(REPO_ROOT / CONFIGS[name]))


def narrow(model_cfg):
    """The same detector with a ResNet-18 (base 8), 16-channel FPN and head, GN of 4 groups: same code paths."""
    cfg = copy.deepcopy(model_cfg)
    cfg.backbone.update(depth=18, base_channels=8, init_cfg=None)
    cfg.neck.update(in_channels=[8, 16, 32, 64], out_channels=16)
    cfg.bbox_head.update(
        in_channels=16, feat_channels=16, stacked_convs=2, norm_cfg=dict(type="GN", num_groups=4, requires_grad=True)
    )
    return cfg


def meta(img_shape, scale=1.0, pad_shape=None):
    return dict(
        img_shape=(*img_shape, 3),
        ori_shape=(*img_shape, 3),
        pad_shape=(*(pad_shape or img_shape), 3),
        scale_factor=np.full(4, scale, dtype=np.float32),
    )


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def small_head(**kw) -> FCOSHead:
    cfg = dict(
        type="FCOSHead",
        num_classes=3,
        in_channels=8,
        feat_channels=8,
        stacked_convs=1,
        strides=[8, 16],
        regress_ranges=((-1, 16), (16, 1e8)),
        norm_cfg=dict(type="GN", num_groups=2, requires_grad=True),
        test_cfg=TEST_CFG,
    )
    cfg.update(kw)
    return build_head(cfg)


# --------------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_matches_the_model_zoo(name):
    cfg = load_cfg(name)
    with torch.device("meta"):
        model = build_detector(cfg.model)
    assert isinstance(model, FCOS) and isinstance(model.bbox_head, FCOSHead)
    state = model.state_dict()
    entries, without_nbt, params = COUNTS[name]
    assert len(state) == entries
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == without_nbt
    assert sum(p.numel() for p in model.parameters()) == params
    head = {k: tuple(v.shape) for k, v in state.items() if k.startswith("bbox_head.")}
    assert head == zoo_head_shapes(conv_bias=name == "giou")
    neck = {k: tuple(v.shape) for k, v in state.items() if k.startswith("neck.")}
    assert neck == zoo_neck_shapes()
    assert {k.split(".")[0] for k in state} == {"backbone", "neck", "bbox_head"}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_configs_head_options_and_test_settings(name):
    cfg = load_cfg(name)
    model = build_detector(narrow(cfg.model))
    head = model.bbox_head
    giou = name == "giou"
    assert head.strides == [8, 16, 32, 64, 128]
    assert head.regress_ranges == [(-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)]
    assert (head.norm_on_bbox, head.centerness_on_reg, head.center_sampling) == (giou, giou, giou)
    assert head.center_sample_radius == 1.5
    assert type(head.loss_bbox).__name__ == ("GIoULoss" if giou else "IoULoss")
    assert head.test_cfg == dict(TEST_CFG, nms=dict(type="nms", iou_threshold=0.6 if giou else 0.5))
    assert model.neck.add_extra_convs == "on_output" and model.neck.relu_before_extra_convs
    assert model.backbone.layer1[0].conv1.stride == (1, 1) and model.backbone.layer2[0].conv1.stride == (2, 2)  # caffe
    mean = [103.53, 116.28, 123.675] if giou else [102.9801, 115.9465, 122.7717]
    assert cfg.img_norm_cfg == dict(mean=mean, std=[1.0, 1.0, 1.0], to_rgb=False)
    assert cfg.data.test.pipeline[1].transforms[2] == dict(type="Normalize", **cfg.img_norm_cfg)
    bias_rules = dict(bias_lr_mult=2.0, bias_decay_mult=0.0)
    assert cfg.optimizer == dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=1e-4, paramwise_cfg=bias_rules)
    assert cfg.optimizer_config == dict(grad_clip=None if giou else dict(max_norm=35, norm_type=2))
    warmup = dict(warmup="linear" if giou else "constant", warmup_iters=500, warmup_ratio=1.0 / 3)
    assert cfg.lr_config == dict(policy="step", step=[8, 11], **warmup)


def test_scale_is_a_zero_dim_parameter():
    scale = Scale(1.0)
    assert dict(scale.state_dict())["scale"].shape == torch.Size([])
    assert torch.equal(scale(torch.ones(2)), torch.ones(2))
    scale.scale.data.fill_(3.0)
    assert torch.equal(scale(torch.ones(2)), torch.full((2,), 3.0))


def test_init_and_unsupported_options():
    head = small_head()
    assert head.conv_cls.bias.tolist() == pytest.approx([-math.log(99)] * 3, abs=1e-6)
    assert torch.all(head.conv_reg.bias == 0) and torch.all(head.conv_centerness.bias == 0)
    assert head.cls_convs[0].conv.bias is None  # 'auto' with GN
    assert float(head.conv_reg.weight.detach().std()) == pytest.approx(0.01, rel=0.3)
    assert small_head(conv_bias=True).cls_convs[0].conv.bias is not None
    with pytest.raises(ValueError, match="dcn_on_last_conv"):
        small_head(dcn_on_last_conv=True)
    with pytest.raises(ValueError, match="regress_ranges"):
        small_head(regress_ranges=((-1, 64),))


def test_legacy_predictor_names_are_renamed():
    old = {
        "bbox_head.fcos_cls.weight": 1,
        "bbox_head.fcos_reg.bias": 2,
        "bbox_head.fcos_centerness.weight": 3,
        "bbox_head.cls_convs.0.conv.weight": 4,
        "bbox_head.scales.0.scale": 5,
        "neck.fpn_convs.0.conv.weight": 6,
    }
    assert rename_legacy_fcos_keys(old) == {
        "bbox_head.conv_cls.weight": 1,
        "bbox_head.conv_reg.bias": 2,
        "bbox_head.conv_centerness.weight": 3,
        "bbox_head.cls_convs.0.conv.weight": 4,
        "bbox_head.scales.0.scale": 5,
        "neck.fpn_convs.0.conv.weight": 6,
    }


# --------------------------------------------------------------------------------------------------- points, coder
def test_points_are_cell_centres_row_major():
    generator = MlvlPointGenerator([8, 16, 32, 64, 128])
    sizes = [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]  # an 800 x 1088 input
    points = generator.grid_priors(sizes)
    assert sum(p.size(0) for p in points) == 18134
    assert points[0].dtype == torch.float32
    assert points[0][0].tolist() == [4.0, 4.0] and points[0][1].tolist() == [12.0, 4.0]
    assert points[0][136].tolist() == [4.0, 12.0]  # index y * W + x
    assert points[0][-1].tolist() == [1084.0, 796.0]
    assert points[4][0].tolist() == [64.0, 64.0]
    with_stride = generator.single_level_grid_priors((2, 3), 1, with_stride=True)
    assert with_stride.tolist() == [[x, y, 16.0, 16.0] for y in (8.0, 24.0) for x in (8.0, 24.0, 40.0)]
    flags = generator.valid_flags([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)], (20, 32))
    assert flags[0].view(4, 4).tolist() == [[True] * 4] * 3 + [[False] * 4]  # ceil(20 / 8) = 3 valid rows
    assert MlvlPointGenerator([8], offset=0.0).grid_priors([(1, 2)])[0].tolist() == [[0.0, 0.0], [8.0, 0.0]]


def test_distance2bbox_decodes_and_clips():
    points = torch.tensor([[4.0, 4.0], [60.0, 40.0]])
    distances = torch.tensor([[10.0, 20.0, 30.0, 40.0], [5.0, 5.0, 50.0, 50.0]])
    assert distance2bbox(points, distances).tolist() == [[-6.0, -16.0, 34.0, 44.0], [55.0, 35.0, 110.0, 90.0]]
    # img_shape (h, w) = (80, 100): x in [0, 100], y in [0, 80], the bounds reachable
    assert distance2bbox(points, distances, (80, 100, 3)).tolist() == [[0, 0, 34, 44], [55, 35, 100, 80]]
    boxes = torch.tensor([[2.0, 3.0, 20.0, 30.0], [50.0, 30.0, 70.0, 60.0]])
    assert torch.equal(distance2bbox(points, bbox2distance(points, boxes)), boxes)
    clamped = bbox2distance(points, boxes, max_dis=16).flatten().tolist()
    assert clamped == pytest.approx([2.0, 1.0, 15.9, 15.9, 10.0, 10.0, 10.0, 15.9])
    assert DistancePointBBoxCoder(clip_border=False).decode(points, distances, (80, 100)).tolist()[0][0] == -6.0
    assert DistancePointBBoxCoder().decode(points, distances, (80, 100)).tolist()[0][0] == 0.0
    assert DistancePointBBoxCoder().encode(points, boxes).tolist() == bbox2distance(points, boxes).tolist()


# --------------------------------------------------------------------------------------------------- losses
def test_iou_and_giou_losses():
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    target = torch.tensor([[0.0, 0.0, 10.0, 20.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    iou = build_loss(dict(type="IoULoss", reduction="none"))(pred, target)
    assert iou.tolist() == pytest.approx([math.log(2), -math.log(1e-6), 0.0], abs=1e-5)
    giou = build_loss(dict(type="GIoULoss", reduction="none"))(pred, target)
    assert giou.tolist() == pytest.approx([0.5, 1 + 700 / 900, 0.0], abs=1e-6)
    linear = build_loss(dict(type="IoULoss", mode="linear", reduction="none"))(pred, target)
    assert linear.tolist() == pytest.approx([0.5, 1 - 1e-6, 0.0], abs=1e-6)
    weight = torch.tensor([2.0, 0.0, 1.0])
    loss = build_loss(dict(type="IoULoss", loss_weight=3.0))(pred, target, weight, avg_factor=4.0)
    assert float(loss) == pytest.approx(3.0 * 2 * math.log(2) / (4.0 + EPS), rel=1e-6)
    loss4 = build_loss(dict(type="GIoULoss"))(pred, target, weight[:, None].expand(3, 4), avg_factor=4.0)
    assert float(loss4) == pytest.approx(2 * 0.5 / 4.0, rel=1e-6)  # (N, 4) weights: their mean per box
    # no positive weight: zero, graph kept, loss_weight not applied
    pred.requires_grad_(True)
    zero = build_loss(dict(type="GIoULoss", loss_weight=2.0))(pred, target, torch.zeros(3), avg_factor=1.0)
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    empty = build_loss(dict(type="IoULoss"))(pred[:0], target[:0], torch.zeros(0), avg_factor=1.0)
    assert float(empty.detach()) == 0.0
    with pytest.raises(ValueError, match="mode"):
        build_loss(dict(type="IoULoss", mode="cube"))


# --------------------------------------------------------------------------------------------------- dense test path
def test_filter_scores_and_topk_is_strict_and_descending():
    scores = torch.tensor([[0.05, 0.3, 0.0], [0.9, 0.3, 0.051], [0.2, 0.0, 0.3]])
    kept, labels, locations = filter_scores_and_topk(scores, 0.05, 100)
    assert kept.tolist() == pytest.approx([0.9, 0.3, 0.3, 0.3, 0.2, 0.051])
    # equal scores keep the (location, class) row-major order
    assert list(zip(locations.tolist(), labels.tolist())) == [(1, 0), (0, 1), (1, 1), (2, 2), (2, 0), (1, 2)]
    kept, labels, locations = filter_scores_and_topk(scores, 0.05, 2)
    assert kept.tolist() == pytest.approx([0.9, 0.3]) and locations.tolist() == [1, 0]
    assert filter_scores_and_topk(scores, 0.95, 10)[0].numel() == 0


def test_dense_nms_multiplies_factors_and_caps():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [1.0, 0.0, 11.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 0, 1])
    factors = torch.tensor([0.1, 1.0, 0.5])
    dets, det_labels = dense_nms(boxes, scores, labels, factors, dict(type="nms", iou_threshold=0.5), 100)
    assert dets[:, 4].tolist() == pytest.approx([0.8, 0.35])  # box 0 (0.09) suppressed by box 1 (0.8), same class
    assert det_labels.tolist() == [0, 1]
    dets, _ = dense_nms(boxes, scores, labels, None, dict(type="nms", iou_threshold=0.5), 1)
    assert dets[:, 4].tolist() == pytest.approx([0.9])
    dets, det_labels = dense_nms(boxes[:0], scores[:0], labels[:0], factors[:0], dict(type="nms", iou_threshold=0.5), 9)
    assert dets.shape == (0, 5) and det_labels.shape == (0,)


def _set(tensor, channel, y, x, value):
    tensor[0, channel, y, x] = value


def test_get_bboxes_hand_made_answer():
    """Two levels (strides 8, 16) of a 32 x 32 input whose image is 30 high and 32 wide, rescaled by 2.

    Level 0, nms_pre 3: (x1, y1) c0 p 0.9 ctr 0.1; (x2, y1) c0 p 0.8 ctr ~1; (x3, y3) c2 p 0.7 ctr ~1;
    (x0, y0) c1 p 0.6 ctr ~1 (dropped by the top-3 on class probability although its product would be the
    second best). Level 1: (x0, y0) c1 p 0.5 ctr 0.5, clipped at 0; (x1, y1) c2 p 0.3 ctr 0.5, clipped at (32, 30).
    """
    head = small_head(test_cfg=dict(TEST_CFG, nms_pre=3)).eval()
    cls0, reg0, ctr0 = torch.full((1, 3, 4, 4), -10.0), torch.ones(1, 4, 4, 4), torch.zeros(1, 1, 4, 4)
    cls1, reg1, ctr1 = torch.full((1, 3, 2, 2), -10.0), torch.ones(1, 4, 2, 2), torch.zeros(1, 1, 2, 2)
    high = 10.0
    for channel, y, x, p, c, dist in [
        (0, 1, 1, 0.9, logit(0.1), (8, 8, 8, 8)),  # point (12, 12): box (4, 4, 20, 20)
        (0, 1, 2, 0.8, high, (15, 8, 1, 8)),  # point (20, 12): box (5, 4, 21, 20), IoU 0.88 with the one above
        (2, 3, 3, 0.7, high, (2, 2, 2, 2)),  # point (28, 28): box (26, 26, 30, 30)
        (1, 0, 0, 0.6, high, (1, 1, 1, 1)),
    ]:
        _set(cls0, channel, y, x, logit(p))
        ctr0[0, 0, y, x] = c
        reg0[0, :, y, x] = torch.tensor(dist, dtype=torch.float32)
    _set(cls1, 1, 0, 0, logit(0.5))
    reg1[0, :, 0, 0] = torch.tensor([100.0, 100.0, 4.0, 4.0])  # point (8, 8): box (-92, -92, 12, 12) -> (0, 0, 12, 12)
    _set(cls1, 2, 1, 1, logit(0.3))
    reg1[0, :, 1, 1] = torch.tensor([4.0, 4.0, 100.0, 100.0])  # point (24, 24): -> (20, 20, 32, 30)

    img_meta = meta((30, 32), scale=2.0)
    [(dets, labels)] = head.get_bboxes([cls0, cls1], [reg0, reg1], [ctr0, ctr1], [img_meta], rescale=True)
    top = torch.sigmoid(torch.tensor(high)).item()
    assert labels.tolist() == [0, 2, 1, 2]
    assert dets[:, 4].tolist() == pytest.approx([0.8 * top, 0.7 * top, 0.25, 0.15], rel=1e-5)  # no sqrt
    expected_boxes = [[5, 4, 21, 20], [26, 26, 30, 30], [0, 0, 12, 12], [20, 20, 32, 30]]
    assert torch.allclose(dets[:, :4], torch.tensor(expected_boxes, dtype=torch.float32) / 2.0)

    [(unscaled, _)] = head.get_bboxes([cls0, cls1], [reg0, reg1], [ctr0, ctr1], [img_meta], rescale=False)
    assert torch.allclose(unscaled[:, :4], torch.tensor(expected_boxes, dtype=torch.float32))
    capped_cfg = dict(TEST_CFG, nms_pre=3, max_per_img=2)
    [(capped, _)] = head.get_bboxes([cls0, cls1], [reg0, reg1], [ctr0, ctr1], [img_meta], cfg=capped_cfg)
    assert capped[:, 4].tolist() == pytest.approx([0.8 * top, 0.7 * top], rel=1e-5)
    # without a top-k cap the 0.6 candidate comes back, third
    [(all_dets, all_labels)] = head.get_bboxes(
        [cls0, cls1], [reg0, reg1], [ctr0, ctr1], [img_meta], cfg=dict(TEST_CFG, nms_pre=-1)
    )
    assert all_labels.tolist() == [0, 2, 1, 1, 2] and all_dets[2, 4] == pytest.approx(0.6 * top, rel=1e-5)
    # no score factor: the class probability alone, so the 0.9 box wins NMS over the 0.8 one
    [(plain, plain_labels)] = head.get_bboxes([cls0, cls1], [reg0, reg1], None, [img_meta], cfg=capped_cfg)
    assert plain[:, 4].tolist() == pytest.approx([0.9, 0.7], rel=1e-5) and plain_labels.tolist() == [0, 2]
    # nothing above the threshold
    [(none, none_labels)] = head.get_bboxes([cls0 - 100, cls1 - 100], [reg0, reg1], [ctr0, ctr1], [img_meta])
    assert none.shape == (0, 5) and none_labels.shape == (0,)


# --------------------------------------------------------------------------------------------------- forward
def test_forward_outputs_distances_and_centerness_branch():
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)]
    head = small_head()
    with torch.no_grad():
        head.conv_reg.bias.fill_(0.5)
        head.scales[1].scale.fill_(2.0)
    head.eval()
    with torch.no_grad():
        cls_scores, bbox_preds, centernesses = head(feats)
        raw = [head.forward_single(f, s, st) for f, s, st in zip(feats, head.scales, head.strides)]
        cls_feat = head.cls_convs[0](feats[1])
        reg_raw = head.conv_reg(head.reg_convs[0](feats[1]))
        assert torch.allclose(centernesses[1], head.conv_centerness(cls_feat))
    assert isinstance(cls_scores, list) and isinstance(bbox_preds, list) and isinstance(centernesses, list)
    assert [tuple(t.shape) for t in cls_scores] == [(2, 3, 4, 4), (2, 3, 2, 2)]
    assert [tuple(t.shape) for t in bbox_preds] == [(2, 4, 4, 4), (2, 4, 2, 2)]
    assert [tuple(t.shape) for t in centernesses] == [(2, 1, 4, 4), (2, 1, 2, 2)]
    assert torch.allclose(bbox_preds[1], (2.0 * reg_raw).exp())  # base: exp(scale * reg), no stride
    assert torch.equal(raw[0][1], bbox_preds[0])

    normed = small_head(norm_on_bbox=True, centerness_on_reg=True)
    normed.load_state_dict(head.state_dict())
    normed.eval()
    with torch.no_grad():
        _, eval_preds, eval_ctr = normed(feats)
        reg_feat = normed.reg_convs[0](feats[1])
        assert torch.allclose(eval_ctr[1], normed.conv_centerness(reg_feat))
        normed.train()
        _, train_preds, _ = normed(feats)
    assert torch.allclose(train_preds[1], (2.0 * reg_raw).clamp(min=0))  # relu(scale * reg) in training
    assert torch.allclose(eval_preds[1], (2.0 * reg_raw).clamp(min=0) * 16)  # times the stride at test
    assert torch.allclose(eval_preds[0], train_preds[0] * 8)


# --------------------------------------------------------------------------------------------------- training targets
def _points(head, sizes=((4, 4), (2, 2))):
    return head.prior_generator.grid_priors(list(sizes))


def test_targets_regress_ranges_and_min_area():
    """32 x 32 input, strides 8 / 16, ranges (-1, 16) / (16, inf).

    gt A (2, 2, 18, 14) class 2 (area 192): the level-0 points (4|12, 4|12) lie strictly inside, their largest
    distance is <= 14, so they are positive; the level-1 point (8, 8) is inside too, but its largest distance (10) is
    below 16. gt B (0, 0, 24, 16) class 0 (area 384) also covers those level-0 points (within range): A, the smaller,
    wins. Level-1 point (8, 8) for B: distances (8, 8, 16, 8), largest exactly 16 -> positive (range ends inclusive).
    """
    head = small_head()
    gt_a = [2.0, 2.0, 18.0, 14.0]
    gt_b = [0.0, 0.0, 24.0, 16.0]
    labels, targets = head.get_targets(_points(head), [torch.tensor([gt_a, gt_b])], [torch.tensor([2, 0])])
    bg = head.num_classes
    expected0 = torch.full((16,), bg)
    expected0[[0, 1, 4, 5]] = 2  # (4, 4), (12, 4), (4, 12), (12, 12)
    # (20, 4) is outside A, and B's distances there (20, 4, 4, 12) exceed level 0's range: background
    assert labels[0].tolist() == expected0.tolist()
    assert labels[1].tolist() == [0, bg, bg, bg]
    assert targets[0][[0, 1, 4, 5]].tolist() == [[2, 2, 14, 10], [10, 2, 6, 10], [2, 10, 14, 2], [10, 10, 6, 2]]
    assert targets[1][0].tolist() == [8, 8, 16, 8]
    assert head.centerness_target(targets[0][[0, 1]]).tolist() == pytest.approx(
        [math.sqrt((2 / 14) * (2 / 10)), math.sqrt((6 / 10) * (2 / 10))]
    )

    normed = small_head(norm_on_bbox=True)
    _, normed_targets = normed.get_targets(_points(normed), [torch.tensor([gt_a, gt_b])], [torch.tensor([2, 0])])
    assert torch.allclose(normed_targets[0], targets[0] / 8) and torch.allclose(normed_targets[1], targets[1] / 16)


def test_targets_center_sampling_and_batches():
    """Centre sampling with radius 0.75: at level 0 the centre box of A (centre (10, 8)) is (4, 2, 16, 14); only the
    points with x = 12 lie strictly inside it ((4, .) sits on its border). Targets stay the full-box distances."""
    head = small_head(center_sampling=True, center_sample_radius=0.75)
    gt_a = torch.tensor([[2.0, 2.0, 18.0, 14.0]])
    no_gt = torch.zeros((0, 4))
    labels, targets = head.get_targets(
        _points(head), [gt_a, no_gt], [torch.tensor([1]), torch.zeros(0, dtype=torch.long)]
    )
    bg = head.num_classes
    # rows: image 0's 16 points, then image 1's 16 points
    assert labels[0].shape == (32,) and labels[1].shape == (8,)
    assert torch.nonzero(labels[0] != bg).flatten().tolist() == [1, 5]  # (12, 4) and (12, 12)
    assert targets[0][[1, 5]].tolist() == [[10, 2, 6, 10], [10, 10, 6, 2]]
    assert torch.all(labels[1] == bg)
    assert torch.all(targets[0][16:] == 0)
    # without centre sampling the border point (4, 4) is positive too
    plain = small_head()
    plain_labels, _ = plain.get_targets(_points(plain), [gt_a], [torch.tensor([1])])
    assert torch.nonzero(plain_labels[0] != bg).flatten().tolist() == [0, 1, 4, 5]


def test_loss_matches_its_definition():
    head = small_head(loss_bbox=dict(type="GIoULoss", loss_weight=1.0)).train()
    feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    gt_bboxes = [torch.tensor([[2.0, 2.0, 18.0, 14.0], [0.0, 0.0, 24.0, 16.0]])]
    gt_labels = [torch.tensor([2, 0])]
    cls_scores, bbox_preds, centernesses = head(feats)
    losses = head.loss(cls_scores, bbox_preds, centernesses, gt_bboxes, gt_labels, [meta((32, 32))])
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness"}
    assert all(v.requires_grad for v in losses.values())
    losses = {k: v.detach() for k, v in losses.items()}

    points = _points(head)
    labels, targets = head.get_targets(points, gt_bboxes, gt_labels)
    flat_cls = torch.cat([s.detach().permute(0, 2, 3, 1).reshape(-1, 3) for s in cls_scores])
    flat_reg = torch.cat([p.detach().permute(0, 2, 3, 1).reshape(-1, 4) for p in bbox_preds])
    flat_ctr = torch.cat([c.detach().reshape(-1) for c in centernesses])
    flat_labels, flat_targets, flat_points = torch.cat(labels), torch.cat(targets), torch.cat(points)
    pos = torch.nonzero(flat_labels < 3).flatten()
    assert pos.numel() == 5
    focal = sigmoid_focal_loss(flat_cls, flat_labels, reduction="sum")
    assert float(losses["loss_cls"]) == pytest.approx(float(focal) / 5, rel=1e-5)
    ctr_target = head.centerness_target(flat_targets[pos])
    pred_boxes = distance2bbox(flat_points[pos], flat_reg[pos])
    target_boxes = distance2bbox(flat_points[pos], flat_targets[pos])
    giou = build_loss(dict(type="GIoULoss", reduction="none"))(pred_boxes, target_boxes)
    assert float(losses["loss_bbox"]) == pytest.approx(float((giou * ctr_target).sum() / ctr_target.sum()), rel=1e-5)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(flat_ctr[pos], ctr_target, reduction="sum")
    assert float(losses["loss_centerness"]) == pytest.approx(float(bce) / 5, rel=1e-5)

    # no positives: zero box and centerness losses that keep the graph, focal loss averaged over 1
    empty = head.loss(
        cls_scores,
        bbox_preds,
        centernesses,
        [torch.zeros((0, 4))],
        [torch.zeros(0, dtype=torch.long)],
        [meta((32, 32))],
    )
    assert float(empty["loss_bbox"].detach()) == 0.0 and float(empty["loss_centerness"].detach()) == 0.0
    assert empty["loss_bbox"].requires_grad
    assert float(empty["loss_cls"].detach()) == pytest.approx(
        float(sigmoid_focal_loss(flat_cls, torch.full_like(flat_labels, 3), reduction="sum")), rel=1e-5
    )


# --------------------------------------------------------------------------------------------------- detectors
def _batch(num_images=2, height=128, width=160):
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


@pytest.mark.parametrize("name", list(CONFIGS))
def test_zoo_configs_run_inference(name):
    model = build_detector(load_cfg(name).model).eval()
    with torch.no_grad():
        model.bbox_head.conv_cls.bias.fill_(0.0)  # scores about 0.5: every location and class is a candidate
        img, metas, _, _ = _batch(num_images=1)
        results = model(img=[img], img_metas=[metas], return_loss=False, rescale=True)
    assert len(results) == 1 and len(results[0]) == 80
    assert all(a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 5 for a in results[0])
    assert 0 < sum(len(a) for a in results[0]) <= 100
    boxes = np.concatenate(results[0])
    assert boxes[:, :4].min() >= 0  # clipped to the 128 x 160 image, then rescaled by 2
    assert boxes[:, [0, 2]].max() <= 80 + 1e-4 and boxes[:, [1, 3]].max() <= 64 + 1e-4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_tiny_fcos_trains(name):
    model = build_detector(narrow(load_cfg(name).model)).train()
    img, metas, gt_bboxes, gt_labels = _batch(height=96, width=128)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    data = dict(img=img, img_metas=metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels)
    totals = []
    for _ in range(8):
        outputs = model.train_step(data)
        assert set(outputs["log_vars"]) >= {"loss_cls", "loss_bbox", "loss_centerness", "loss"}
        assert all(math.isfinite(v) for v in outputs["log_vars"].values())
        optimizer.zero_grad()
        outputs["loss"].backward()
        optimizer.step()
        totals.append(outputs["log_vars"]["loss"])
    assert totals[-1] < totals[0]
    assert model.bbox_head.scales[0].scale.grad is not None

"""Which modules of a detector get which quantizers (qdrop.model.quantize_detector)."""

import copy
import inspect
import re

import numpy as np
import pytest
import torch
from torch import nn

from helpers.qdrop_models import faster_rcnn_cfg, fused_detector, q_config, retinanet_cfg
from mmdet.models.necks import FPN
from qdrop.model import (
    QuantizedBasicBlock,
    QuantizedBottleneck,
    format_placement_table,
    placement_table,
    quantization_units,
    quantize_detector,
)
from qdrop.model.quantize import CHILD_ROLES, HEADS, TRUNK
from qdrop.quantization import QuantizedLayer, disable_all


def _relu(layer) -> bool:
    return isinstance(layer.activation, nn.ReLU)


def _rows_by_name(model):
    return {row.quantizer: row for row in placement_table(model)}


@pytest.mark.parametrize("depth, block_cls", [(18, QuantizedBasicBlock), (50, QuantizedBottleneck)])
def test_backbone_blocks_and_stem(depth, block_cls):
    model = quantize_detector(fused_detector(faster_rcnn_cfg(depth)), q_config(w_bit=2, a_bit=4))
    backbone = model.backbone
    blocks = [m for layer in ("layer1", "layer2", "layer3", "layer4") for m in getattr(backbone, layer)]
    assert blocks and all(isinstance(block, block_cls) for block in blocks)
    # stem: conv + folded ReLU, 8-bit weights, 4-bit output; maxpool stays
    assert isinstance(backbone.conv1, QuantizedLayer) and _relu(backbone.conv1)
    assert isinstance(backbone.maxpool, nn.MaxPool2d)
    rows = _rows_by_name(model)
    assert rows["backbone.conv1.module.weight_fake_quant"].bits == 8
    assert rows["backbone.conv1.block_post_act_fake_quantize"].bits == 4
    assert rows["backbone.layer1.0.conv1.module.weight_fake_quant"].bits == 2
    assert rows["backbone.layer1.0.conv1.module.weight_fake_quant"].granularity == "per-channel (axis 0)"
    assert rows["backbone.layer1.0.block_post_act_fake_quantize"].granularity == "per-tensor"
    first = blocks[0]
    # inner layers: conv1 (+ReLU) quantized output; last conv and downsample without output quantizer
    assert _relu(first.conv1) and first.conv1.qoutput
    last_conv = first.conv3 if depth == 50 else first.conv2
    assert not last_conv.qoutput and not _relu(last_conv)
    if depth == 50:
        assert _relu(first.conv2) and first.conv2.qoutput
        assert first.downsample is not None and not first.downsample.qoutput
    else:
        assert first.downsample is None  # BasicBlock ResNets keep 8 channels in layer1
        assert not backbone.layer2[0].downsample.qoutput


@pytest.mark.parametrize("model_cfg", [faster_rcnn_cfg(50), retinanet_cfg(18)], ids=["faster_r50", "retina_r18"])
def test_fpn_outputs_unquantized_laterals_quantized(model_cfg):
    model = quantize_detector(fused_detector(model_cfg), q_config())
    neck = model.neck
    assert all(isinstance(m, QuantizedLayer) and m.qoutput for m in neck.lateral_convs)
    # every output conv, RetinaNet's two extra convs included, has no output quantizer
    assert len(neck.fpn_convs) == (4 if model_cfg["type"] == "FasterRCNN" else 5)
    assert all(isinstance(m, QuantizedLayer) and not m.qoutput for m in neck.fpn_convs)
    # the FPN forward (top-down adds, interpolation, extra levels) still works on the wrapped modules
    feats = model.extract_feat(torch.randn(1, 3, 64, 96))
    assert len(feats) == 5 and all(f.shape[1] == 16 for f in feats)


def test_heads_stay_float_by_default():
    model = quantize_detector(fused_detector(faster_rcnn_cfg(50)), q_config())
    for head in (model.rpn_head, model.roi_head):
        assert not any(isinstance(m, QuantizedLayer) for m in head.modules())
    assert all(not name.startswith(("rpn_head", "roi_head")) for name in _rows_by_name(model))


def test_quant_head_faster_rcnn():
    model = quantize_detector(fused_detector(faster_rcnn_cfg(50)), q_config(quant_head=True))
    rpn, bbox_head = model.rpn_head, model.roi_head.bbox_head
    assert _relu(rpn.rpn_conv) and rpn.rpn_conv.qoutput
    for final in (rpn.rpn_cls, rpn.rpn_reg, bbox_head.fc_cls, bbox_head.fc_reg):
        assert isinstance(final, QuantizedLayer) and not final.qoutput
    assert all(_relu(fc) and fc.qoutput for fc in bbox_head.shared_fcs)
    meta = dict(
        img_shape=(64, 96, 3),
        ori_shape=(64, 96, 3),
        pad_shape=(64, 96, 3),
        scale_factor=np.ones(4, dtype=np.float32),
        flip=False,
        batch_input_shape=(64, 96),
    )
    assert len(model.simple_test(torch.randn(1, 3, 64, 96), [meta])) == 1


def test_quant_head_retinanet():
    model = quantize_detector(fused_detector(retinanet_cfg(18)), q_config(quant_head=True))
    head = model.bbox_head
    assert all(_relu(m) and m.qoutput for m in list(head.cls_convs) + list(head.reg_convs))
    assert not head.retina_cls.qoutput and not head.retina_reg.qoutput


class _ToyNeck(FPN):
    """An FPN-like neck: a ReLU before any conv, then lateral/output convs, then a sibling registered after
    `fpn_convs`."""

    def __init__(self):
        nn.Module.__init__(self)
        self.relu = nn.ReLU()
        self.lateral_convs = nn.ModuleList([nn.Conv2d(4, 4, 1)])
        self.fpn_convs = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1)])
        self.after = nn.Conv2d(4, 4, 1)
        self.after_relu = nn.ReLU()


class _ToyDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Identity(), nn.ReLU())
        self.neck = _ToyNeck()


def test_output_flag_does_not_leak_and_lone_relu_is_kept():
    model = quantize_detector(_ToyDetector(), q_config())
    neck = model.neck
    assert isinstance(neck.relu, nn.ReLU)  # no conv before it: left alone, no crash
    assert neck.lateral_convs[0].qoutput
    assert not neck.fpn_convs[0].qoutput
    assert neck.after.qoutput  # a sibling after fpn_convs keeps its output quantizer
    assert _relu(neck.after)  # the ReLU registered after it folds into it
    assert _relu(model.backbone[0])  # ReLU after a (folded-BN) Identity folds into the conv
    assert model.backbone[0].module.weight_fake_quant.bit == 8


def test_unfused_batchnorm_is_an_error():
    from mmdet.models import build_detector

    model = build_detector(retinanet_cfg(18)).eval()
    with pytest.raises(ValueError, match="fuse"):
        quantize_detector(model, q_config())


def test_units_and_table():
    model = quantize_detector(fused_detector(retinanet_cfg(18)), q_config())
    names = [name for name, _ in quantization_units(model)]
    assert names[0] == "backbone.conv1" and "backbone.layer1.0" in names and "neck.fpn_convs.4" in names
    assert not any(name.startswith("backbone.layer1.0.") for name in names)  # inner layers belong to their block
    table = format_placement_table(placement_table(model))
    assert "backbone.conv1.module.weight_fake_quant" in table and "AdaRoundFakeQuantize" in table
    assert "neck.fpn_convs.0.block_post_act_fake_quantize" not in table


def _tiny_detectors():
    return [fused_detector(faster_rcnn_cfg(50)), fused_detector(retinanet_cfg(18))]


def test_child_roles_name_existing_children_and_functional_relus():
    """Fails when an mmdet module the placement rules describe renames a child or stops applying its ReLU."""
    detectors = _tiny_detectors()
    for parent_type, roles in CHILD_ROLES.items():
        parents = [m for model in detectors for m in model.modules() if isinstance(m, parent_type)]
        assert parents, f"no {parent_type.__name__} in the tiny detectors"
        source = inspect.getsource(parent_type)
        for parent in parents:
            for name, role in roles.items():
                assert isinstance(getattr(parent, name, None), nn.Module), f"{parent_type.__name__}.{name}"
                if role.relu_after:
                    assert re.search(rf"F\.relu\(self\.{name}\(", source), f"F.relu after {name}"
                if role.relu_after_each:
                    loop = rf"for (\w+) in self\.{name}:\s*\n\s*\w+ = F\.relu\(\1\("
                    assert re.search(loop, source), f"F.relu after each of {name}"
    for model in detectors:
        assert all(isinstance(getattr(model, part), nn.Module) for part in TRUNK)
        assert any(isinstance(getattr(model, head, None), nn.Module) for head in HEADS)


def _head_outputs(model, feats, rois):
    if hasattr(model, "rpn_head"):
        return model.rpn_head(feats), model.roi_head.bbox_head(rois)
    return model.bbox_head(feats)


@pytest.mark.parametrize("model_cfg", [faster_rcnn_cfg(50), retinanet_cfg(18)], ids=["faster_r50", "retina_r18"])
def test_folded_relus_sit_where_the_float_model_applies_them(model_cfg):
    """With every quantizer off, a fully quantized detector computes the float detector's outputs: no ReLU was
    folded where mmdet's forward applies none."""
    float_model = fused_detector(model_cfg)
    model = quantize_detector(copy.deepcopy(float_model), q_config(quant_head=True))
    disable_all(model)
    img = torch.randn(1, 3, 64, 96)
    rois = torch.randn(3, 16, 7, 7)
    with torch.no_grad():
        expected_feats, feats = float_model.extract_feat(img), model.extract_feat(img)
        expected, actual = _head_outputs(float_model, expected_feats, rois), _head_outputs(model, feats, rois)
    torch.testing.assert_close(feats, expected_feats)
    torch.testing.assert_close(actual, expected)

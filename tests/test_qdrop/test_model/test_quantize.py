"""Which modules of a detector get which quantizers (qdrop.model.quantize_detector)."""

import copy
import inspect
import re

import numpy as np
import pytest
import torch
from torch import nn

from helpers.qdrop_models import (
    atss_cfg,
    cascade_rcnn_cfg,
    faster_rcnn_cfg,
    fcos_cfg,
    fused_detector,
    gfl_cfg,
    image_meta,
    mask_rcnn_cfg,
    q_config,
    random_batches,
    regnet_backbone_cfg,
    resnext_backbone_cfg,
    retinanet_cfg,
    with_backbone,
)
from mmdet.models.backbones import RegNetBottleneck, ResNeXtBottleneck
from mmdet.models.dense_heads import Integral
from mmdet.models.necks import FPN
from mmdet.models.utils import Scale
from qdrop.config.q_config import QConfig, load_q_config
from qdrop.model import (
    QuantizedBasicBlock,
    QuantizedBottleneck,
    QuantizedConvNormAct,
    float_parts,
    format_placement_table,
    load_quantized_state,
    placement_table,
    quantization_units,
    quantize_detector,
    quantized_state_dict,
)
from qdrop.model.errors import PlacementError
from qdrop.model.quantize import CHILD_ROLES, HEADS, KEPT_FLOAT, TRUNK
from qdrop.ptq.cache import ReconCache
from qdrop.ptq.calibration import calibrate, observe_weights
from qdrop.ptq.reconstruction import float_reference, reconstruct_unit, unit_output_error
from qdrop.quantization import (
    AdaRoundFakeQuantize,
    QConvTranspose2d,
    QuantizedLayer,
    disable_all,
    enable_calibration,
    enable_quantization,
    fake_quantizers,
)


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
    return [
        fused_detector(cfg)
        for cfg in (
            faster_rcnn_cfg(50),
            retinanet_cfg(18),
            fcos_cfg(),
            atss_cfg(),
            gfl_cfg(),
            cascade_rcnn_cfg(50),
            mask_rcnn_cfg(50),
        )
    ]


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
                    functional = rf"F\.relu\(self\.{name}\("
                    # or the head's own ReLU module on the child's output (FCNMaskHead: only after a deconv)
                    module = rf"(\w+) = self\.{name}\(\1\)\s*\n(?:\s*if [^\n]*:\s*\n)?\s*\1 = self\.relu\(\1\)"
                    assert re.search(functional, source) or re.search(module, source), f"ReLU after {name}"
                if role.applied_elsewhere:
                    assert isinstance(getattr(parent, name), nn.ReLU), f"{parent_type.__name__}.{name} is a ReLU"
                    assert re.search(rf"self\.{name}\(", source), f"{parent_type.__name__} calls {name}"
                if role.relu_after_each:
                    loop = rf"for (\w+) in self\.{name}:\s*\n\s*\w+ = F\.relu\(\1\("
                    assert re.search(loop, source), f"F.relu after each of {name}"
    for model in detectors:
        assert all(isinstance(getattr(model, part), nn.Module) for part in TRUNK)
        assert any(isinstance(getattr(model, head, None), nn.Module) for head in HEADS)


def _head_outputs(model, feats, rois):
    if hasattr(model, "rpn_head"):
        roi_head = model.roi_head
        stages = roi_head.bbox_head if isinstance(roi_head.bbox_head, nn.ModuleList) else [roi_head.bbox_head]
        outputs = [model.rpn_head(feats)] + [head(rois) for head in stages]
        if getattr(roi_head, "with_mask", False):
            mask_rois = torch.randn(3, 16, 14, 14, generator=torch.Generator().manual_seed(4))
            outputs.append(roi_head.mask_head(mask_rois))
        return outputs
    return model.bbox_head(feats)


def _retinanet_gn_head() -> dict:
    """RetinaNet with GroupNorm towers, as configs/tiny/retinanet_tiny_synth.py."""
    cfg = retinanet_cfg(18)
    cfg["bbox_head"]["norm_cfg"] = dict(type="GN", num_groups=4, requires_grad=True)
    return cfg


FULL_MODELS = {
    "faster_r50": faster_rcnn_cfg(50),
    "retina_r18": retinanet_cfg(18),
    "retina_gn_head": _retinanet_gn_head(),
    "fcos": fcos_cfg(),
    "fcos_exp": fcos_cfg(norm_on_bbox=False),
    "atss": atss_cfg(),
    "gfl": gfl_cfg(),
    "retina_resnext": with_backbone(retinanet_cfg(18), resnext_backbone_cfg()),
    "retina_regnet": with_backbone(retinanet_cfg(18), regnet_backbone_cfg()),
    "cascade_r50": cascade_rcnn_cfg(50),
    "mask_r50": mask_rcnn_cfg(50),
}


@pytest.mark.parametrize("model_cfg", list(FULL_MODELS.values()), ids=list(FULL_MODELS))
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


# ----------------------------------------------------------------------------------------- the one-stage family
ONE_STAGE = {"fcos": fcos_cfg(), "atss": atss_cfg(), "gfl": gfl_cfg()}
# The head's final convs: outputs of the detector, weight-quantized without an output quantizer.
FINAL_CONVS = {
    "fcos": ("conv_cls", "conv_reg", "conv_centerness"),
    "atss": ("atss_cls", "atss_reg", "atss_centerness"),
    "gfl": ("gfl_cls", "gfl_reg"),
}


def _published_q_config(repo_root, quant_head: bool) -> QConfig:
    published = load_q_config(repo_root / "exp" / "config.yaml")
    return QConfig.from_mapping({**published.to_dict(), "quant_head": quant_head}, "exp/config.yaml")


def _towers(head) -> list:
    return list(head.cls_convs) + list(head.reg_convs)


@pytest.mark.parametrize("name", sorted(ONE_STAGE))
def test_one_stage_published_placement_keeps_the_head_float(repo_root, name):
    model = quantize_detector(fused_detector(ONE_STAGE[name]), load_q_config(repo_root / "exp" / "config.yaml"))
    assert not any(isinstance(m, (QuantizedLayer, QuantizedConvNormAct)) for m in model.bbox_head.modules())
    rows = _rows_by_name(model)
    assert rows["backbone.conv1.module.weight_fake_quant"].bits == 8
    assert rows["backbone.layer1.0.conv1.module.weight_fake_quant"].bits == 2
    assert not any(row.startswith("bbox_head") for row in rows)
    assert all(isinstance(m, QuantizedLayer) and not m.qoutput for m in model.neck.fpn_convs)
    assert [(part.module, part.kind) for part in float_parts(model)] == [("bbox_head", type(model.bbox_head).__name__)]


@pytest.mark.parametrize("name", sorted(ONE_STAGE))
def test_one_stage_quant_head_placement(repo_root, name):
    float_model = fused_detector(ONE_STAGE[name])
    model = quantize_detector(copy.deepcopy(float_model), _published_q_config(repo_root, quant_head=True))
    head = model.bbox_head
    for tower_conv in _towers(head):
        assert isinstance(tower_conv, QuantizedConvNormAct) and tower_conv.qoutput and _relu(tower_conv)
        assert isinstance(tower_conv.norm, nn.GroupNorm) and tower_conv.module.weight_fake_quant.bit == 2
    for final in FINAL_CONVS[name]:
        layer = getattr(head, final)
        assert isinstance(layer, QuantizedLayer) and not layer.qoutput and layer.activation is None
    assert all(isinstance(scale, Scale) for scale in head.scales)
    assert name != "gfl" or isinstance(head.integral, Integral)
    rows = _rows_by_name(model)
    assert rows["bbox_head.cls_convs.0.block_post_act_fake_quantize"].module == "bbox_head.cls_convs.0"
    assert rows["bbox_head.reg_convs.1.module.weight_fake_quant"].module == "bbox_head.reg_convs.1"
    assert not any(r.startswith(tuple(f"bbox_head.{c}.block_post_act" for c in FINAL_CONVS[name])) for r in rows)

    kept = {part.module: part for part in float_parts(model)}
    norms = {f"bbox_head.{tower}.{i}.norm" for tower in ("cls_convs", "reg_convs") for i in range(2)}
    scales = {f"bbox_head.scales.{i}" for i in range(5)}
    assert set(kept) == norms | scales | ({"bbox_head.integral"} if name == "gfl" else set())
    assert kept["bbox_head.cls_convs.0.norm"].reason == KEPT_FLOAT[nn.GroupNorm]
    table = format_placement_table(placement_table(model)).splitlines()
    float_lines = [line.split() for line in table[2:-1] if line.split()[2] == "float"]
    assert sorted(line[0] for line in float_lines) == sorted(kept)
    assert table[-1].endswith(f"; {len(kept)} parts kept float (tensor 'float')")

    # the checkpoint keys of the GroupNorm units, and a state that loads into a freshly wrapped model
    state = quantized_state_dict(model)
    assert {"bbox_head.cls_convs.0.module.weight", "bbox_head.cls_convs.0.norm.weight"} <= set(state)
    fresh = quantize_detector(copy.deepcopy(float_model), _published_q_config(repo_root, quant_head=True))
    load_quantized_state(fresh, state)


@pytest.mark.parametrize("name", sorted(ONE_STAGE))
def test_one_stage_quantized_forward_after_calibration(name):
    model = quantize_detector(fused_detector(ONE_STAGE[name]), q_config(w_bit=4, a_bit=4, quant_head=True))
    metas = [image_meta(64, 96)] * 2
    batches = [dict(batch, img_metas=metas) for batch in random_batches(num_batches=1)]
    calibrate(model, batches, torch.device("cpu"), run_heads=True, show_progress=False)
    for _, quantizer in fake_quantizers(model.bbox_head):
        assert quantizer.fake_quant_enabled and bool(torch.isfinite(quantizer.scale).all())
    with torch.no_grad():
        results = model.simple_test(batches[0]["img"], metas)
    assert len(results) == 2 and len(results[0]) == model.bbox_head.num_classes


def test_group_norm_unit_calibrates_and_reconstructs():
    """One reconstruction step on a tower unit of a quantized FCOS head: its AdaRound and LSQ parameters move, the
    output error stays finite, the weights end hard-rounded."""
    model = quantize_detector(fused_detector(fcos_cfg()), q_config(w_bit=2, a_bit=4, quant_head=True, iters=1))
    metas = [image_meta(64, 96)] * 2
    batches = [dict(batch, img_metas=metas) for batch in random_batches(num_batches=2)]
    calibrate(model, batches, torch.device("cpu"), run_heads=True, show_progress=False)
    reference = float_reference(model)
    unit, fp_unit = model.bbox_head.reg_convs[1], reference.bbox_head.reg_convs[1]
    assert isinstance(unit, QuantizedConvNormAct)
    assert "bbox_head.reg_convs.1" in dict(quantization_units(model))  # a unit of its own, the norm inside it
    recon = QConfig.from_mapping(q_config(w_bit=2, a_bit=4, quant_head=True, iters=1)).recon
    cache = ReconCache(torch.device("cpu"), keep_on_device=True, keep_fp_input=recon.drop_prob < 1.0)
    for batch in batches:
        quant_input = _unit_input(model, unit, batch["img"])
        fp_input = _unit_input(reference, fp_unit, batch["img"])
        with torch.no_grad():
            cache.add(quant_input, fp_input, fp_unit(fp_input))
    error_before = unit_output_error(unit, cache)
    scale_before = unit.block_post_act_fake_quantize.scale.detach().clone()
    weight_quantizer = unit.module.weight_fake_quant
    assert isinstance(weight_quantizer, AdaRoundFakeQuantize)
    rec_loss, loss, curve = reconstruct_unit(unit, cache, recon, seed=0, show_progress=False)
    assert np.isfinite(rec_loss) and np.isfinite(loss) and curve[0][0] == 0
    assert not torch.equal(unit.block_post_act_fake_quantize.scale.detach(), scale_before)
    assert not weight_quantizer.soft_targets and weight_quantizer.alpha is not None
    error_after = unit_output_error(unit, cache)
    assert np.isfinite(error_before) and np.isfinite(error_after) and error_after > 0


def _unit_input(model, unit, img) -> torch.Tensor:
    """The input `unit` receives during the head's forward on `img`."""
    captured = []
    handle = unit.register_forward_pre_hook(lambda _module, args: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            model.bbox_head(model.extract_feat(img))
    finally:
        handle.remove()
    return captured[0]  # the first level


@pytest.mark.parametrize(
    "backbone, block_type",
    [(resnext_backbone_cfg(), ResNeXtBottleneck), (regnet_backbone_cfg(), RegNetBottleneck)],
    ids=["resnext", "regnet"],
)
def test_resnext_and_regnet_blocks_become_quantized_bottlenecks(repo_root, backbone, block_type):
    float_model = fused_detector(with_backbone(retinanet_cfg(18), backbone))
    float_blocks = [m for m in float_model.backbone.modules() if type(m) is block_type]
    model = quantize_detector(copy.deepcopy(float_model), load_q_config(repo_root / "exp" / "config.yaml"))
    layers = [getattr(model.backbone, name) for name in model.backbone.res_layers]
    blocks = [block for layer in layers for block in layer]
    assert len(blocks) == len(float_blocks) and all(isinstance(block, QuantizedBottleneck) for block in blocks)
    assert [b.conv2.module.groups for b in blocks] == [b.conv2.groups for b in float_blocks]
    assert any(b.conv2.module.groups > 1 for b in blocks)
    stem = model.backbone.conv1
    assert isinstance(stem, QuantizedLayer) and _relu(stem) and stem.module.weight_fake_quant.bit == 8
    assert hasattr(model.backbone, "maxpool") == (block_type is ResNeXtBottleneck)  # RegNet: no max-pool
    assert float_parts(model)[0].module == "bbox_head"


def test_overrides_reach_the_group_norm_units():
    config = QConfig.from_mapping(
        {
            **q_config(w_bit=4, quant_head=True),
            "overrides": [
                {"modules": "bbox_head.cls_convs.*", "w_qconfig": {"bit": 3}},
                {"modules": "bbox_head.reg_convs.0", "quantize": False},
            ],
        },
        "test.yaml",
    )
    model = quantize_detector(fused_detector(fcos_cfg()), config)
    rows = _rows_by_name(model)
    assert rows["bbox_head.cls_convs.1.module.weight_fake_quant"].bits == 3
    assert rows["bbox_head.reg_convs.1.module.weight_fake_quant"].bits == 4
    assert type(model.bbox_head.reg_convs[0]).__name__ == "ConvModule"
    kept = {part.module: part.reason for part in float_parts(model)}
    assert "overrides" in kept["bbox_head.reg_convs.0"]


# ----------------------------------------------------------------------------------- Cascade R-CNN and Mask R-CNN
def test_cascade_rcnn_published_placement_keeps_the_heads_float(repo_root):
    model = quantize_detector(fused_detector(cascade_rcnn_cfg(50)), load_q_config(repo_root / "exp" / "config.yaml"))
    assert not any(isinstance(m, QuantizedLayer) for head in HEADS[:2] for m in getattr(model, head).modules())
    assert not any(row.startswith(("rpn_head", "roi_head")) for row in _rows_by_name(model))
    assert [(part.module, part.kind) for part in float_parts(model)] == [
        ("rpn_head", "RPNHead"),
        ("roi_head", "CascadeRoIHead"),
    ]


def test_quant_head_cascade_rcnn_quantizes_every_stage(repo_root):
    float_model = fused_detector(cascade_rcnn_cfg(50))
    model = quantize_detector(copy.deepcopy(float_model), _published_q_config(repo_root, quant_head=True))
    rows = _rows_by_name(model)
    assert len(model.roi_head.bbox_head) == 3
    for stage, head in enumerate(model.roi_head.bbox_head):
        assert all(isinstance(fc, QuantizedLayer) and _relu(fc) and fc.qoutput for fc in head.shared_fcs)
        for final in (head.fc_cls, head.fc_reg):
            assert isinstance(final, QuantizedLayer) and not final.qoutput and final.activation is None
        prefix = f"roi_head.bbox_head.{stage}"
        assert rows[f"{prefix}.shared_fcs.0.module.weight_fake_quant"].module == f"{prefix}.shared_fcs.0"
        assert rows[f"{prefix}.shared_fcs.1.block_post_act_fake_quantize"].bits == 4
        assert rows[f"{prefix}.fc_reg.module.weight_fake_quant"].bits == 2
        assert f"{prefix}.fc_cls.block_post_act_fake_quantize" not in rows
    assert sum(row.startswith("roi_head.") for row in rows) == 3 * 6
    assert float_parts(model) == []
    state = quantized_state_dict(model)
    assert {"roi_head.bbox_head.2.fc_cls.module.weight", "roi_head.bbox_head.1.shared_fcs.0.module.weight"} <= set(
        state
    )
    fresh = quantize_detector(copy.deepcopy(float_model), _published_q_config(repo_root, quant_head=True))
    load_quantized_state(fresh, state)


def test_quant_head_mask_rcnn_quantizes_the_mask_head(repo_root):
    float_model = fused_detector(mask_rcnn_cfg(50))
    model = quantize_detector(copy.deepcopy(float_model), _published_q_config(repo_root, quant_head=True))
    head = model.roi_head.mask_head
    assert all(isinstance(conv, QuantizedLayer) and _relu(conv) and conv.qoutput for conv in head.convs)
    upsample = head.upsample
    assert isinstance(upsample, QuantizedLayer) and isinstance(upsample.module, QConvTranspose2d)
    assert _relu(upsample) and upsample.qoutput  # the ReLU the head applies after the deconv, folded
    logits = head.conv_logits
    assert isinstance(logits, QuantizedLayer) and not logits.qoutput and logits.activation is None
    assert type(head.relu) is nn.ReLU  # the head's own ReLU module stays (a no-op on the quantized output)
    rows = _rows_by_name(model)
    weight_row = rows["roi_head.mask_head.upsample.module.weight_fake_quant"]
    assert weight_row.granularity == "per-channel (axis 1)" and weight_row.bits == 2
    assert rows["roi_head.mask_head.upsample.block_post_act_fake_quantize"].module == "roi_head.mask_head.upsample"
    assert "roi_head.mask_head.conv_logits.block_post_act_fake_quantize" not in rows
    assert sum(row.startswith("roi_head.mask_head.") for row in rows) == 2 * 2 + 2 + 1
    observe_weights(model)
    state = quantized_state_dict(model)
    assert {"roi_head.mask_head.upsample.module.weight", "roi_head.mask_head.convs.0.module.weight"} <= set(state)
    assert state["roi_head.mask_head.upsample.module.weight_fake_quant.scale"].shape == (16,)
    fresh = quantize_detector(copy.deepcopy(float_model), _published_q_config(repo_root, quant_head=True))
    load_quantized_state(fresh, state)


def test_mask_rcnn_calibrates_and_tests_with_quantized_heads():
    model = quantize_detector(fused_detector(mask_rcnn_cfg(50)), q_config(w_bit=4, a_bit=4, quant_head=True))
    metas = [image_meta(64, 96)] * 2
    batches = [dict(batch, img_metas=metas) for batch in random_batches(num_batches=1)]
    calibrate(model, batches, torch.device("cpu"), run_heads=True, show_progress=False)
    for _, quantizer in fake_quantizers(model.roi_head):
        assert quantizer.fake_quant_enabled and bool(torch.isfinite(quantizer.scale).all())
    with torch.no_grad():
        results = model.simple_test(batches[0]["img"], metas)
    bbox_results, segm_results = results[0]
    assert len(bbox_results) == len(segm_results) == 6
    assert [len(boxes) for boxes in bbox_results] == [len(masks) for masks in segm_results]


def test_transposed_conv_layer_reconstructs_with_adaround():
    """One reconstruction of Mask R-CNN's upsample as a layer: ConvTranspose2d + folded ReLU + output quantizer;
    AdaRound's alpha (on the weight's layout, scales per output channel on axis 1) moves, the weights end
    hard-rounded."""
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(8, 8, 2, stride=2)
    config = QConfig.from_mapping(q_config(w_bit=2, a_bit=4, iters=4, drop_prob=0.5), "test.yaml")
    unit = QuantizedLayer(deconv, nn.ReLU(), config.w_qconfig, config.a_qconfig)
    inputs = [torch.relu(torch.randn(2, 8, 7, 7, generator=torch.Generator().manual_seed(i))) for i in range(2)]
    enable_calibration(unit)
    with torch.no_grad():
        for x in inputs:
            unit(x)
        unit.module.weight_fake_quant(deconv.weight)
    enable_quantization(unit)
    cache = ReconCache(torch.device("cpu"), keep_on_device=True, keep_fp_input=True)
    for x in inputs:
        with torch.no_grad():
            cache.add(x, x, torch.relu(deconv(x)))
    quantizer = unit.module.weight_fake_quant
    assert quantizer.ch_axis == 1 and quantizer.scale.shape == (8,)
    error_before = unit_output_error(unit, cache)
    rec_loss, loss, _ = reconstruct_unit(unit, cache, config.recon, seed=0, show_progress=False)
    assert np.isfinite(rec_loss) and np.isfinite(loss)
    assert quantizer.alpha is not None and quantizer.alpha.shape == deconv.weight.shape
    assert not quantizer.soft_targets
    hard = quantizer(deconv.weight).detach()
    s, z = quantizer.scale.reshape(1, 8, 1, 1), quantizer.zero_point.reshape(1, 8, 1, 1)
    levels = hard / s + z
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert levels.min() >= 0 and levels.max() <= 3
    assert np.isfinite(error_before) and np.isfinite(unit_output_error(unit, cache))


class _GroupedDeconvNeck(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2)


def test_grouped_transposed_conv_per_channel_is_a_placement_error():
    model = _ToyDetector()
    model.neck = _GroupedDeconvNeck()
    with pytest.raises(PlacementError, match=r"neck\.up: a grouped ConvTranspose2d \(groups=2\)"):
        quantize_detector(model, q_config())

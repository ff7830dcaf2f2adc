"""Per-module settings (q_config `overrides:`): validation, matching, and their effect on the placement."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from helpers.qdrop_models import fused_detector, q_config, retinanet_cfg
from mmdet.models import build_detector
from mmdet.utils import fuse_conv_bn, load_config
from qdrop.config.overrides import ModuleOverride
from qdrop.config.q_config import QConfig, load_q_config
from qdrop.model import placement_table, quantization_units, quantize_detector

# The placement table of exp/config.yaml on both tiny configs, recorded when the first layer's 8 bits were a
# special case of the walk: (quantizer, tensor, bits, granularity, quantizer class, observer) per row.
RECORDED_PLACEMENT = Path(__file__).with_name("data") / "placement_exp_config.json"


def _tiny_detector(config_path: str):
    cfg = load_config(config_path)
    cfg.model.backbone.pop("init_cfg", None)
    return fuse_conv_bn(build_detector(cfg.model, test_cfg=cfg.get("test_cfg")).eval())


def _rows(model) -> dict:
    return {row.quantizer: row for row in placement_table(model)}


def _with_overrides(*entries, **q_config_args) -> QConfig:
    return QConfig.from_mapping({**q_config(**q_config_args), "overrides": list(entries)}, "test.yaml")


@pytest.mark.parametrize("config_path", sorted(json.loads(RECORDED_PLACEMENT.read_text())))
def test_published_q_config_gives_the_recorded_placement(repo_root, config_path):
    recorded = json.loads(RECORDED_PLACEMENT.read_text())[config_path]
    q_config_file = load_q_config(repo_root / "exp" / "config.yaml")
    model = quantize_detector(_tiny_detector(str(repo_root / config_path)), q_config_file)
    rows = [list(dataclasses.astuple(row))[:6] for row in placement_table(model)]
    assert rows == recorded


def test_the_first_layer_rule_is_an_entry_that_later_entries_override():
    model = quantize_detector(
        fused_detector(retinanet_cfg(18)),
        _with_overrides({"modules": "backbone.conv1", "w_qconfig": {"bit": 3}}, w_bit=2),
    )
    assert _rows(model)["backbone.conv1.module.weight_fake_quant"].bits == 3


def test_keeping_one_unit_float_changes_exactly_that_units_placement():
    plain = _rows(quantize_detector(fused_detector(retinanet_cfg(18)), q_config(w_bit=2)))
    model = quantize_detector(
        fused_detector(retinanet_cfg(18)), _with_overrides({"modules": "backbone.layer2.1", "quantize": False}, w_bit=2)
    )
    rows = _rows(model)
    removed = set(plain) - set(rows)
    assert removed and all(name.startswith("backbone.layer2.1.") for name in removed)
    assert not any(name.startswith("backbone.layer2.1.") for name in rows)
    assert all(rows[name] == plain[name] for name in rows)
    assert "backbone.layer2.1" not in dict(quantization_units(model))
    assert type(model.backbone.layer2[1]).__name__ == "BasicBlock"


def test_an_entry_on_a_block_sets_its_inner_layers_and_later_entries_win():
    model = quantize_detector(
        fused_detector(retinanet_cfg(18)),
        _with_overrides(
            {"modules": "backbone.layer3.*", "w_qconfig": {"bit": 4}, "a_qconfig": {"bit": 8}},
            {"modules": "backbone.layer3.1.conv2", "w_qconfig": {"bit": 6, "symmetric": True}},
            w_bit=2,
            a_bit=4,
        ),
    )
    rows = _rows(model)
    assert rows["backbone.layer3.0.conv1.module.weight_fake_quant"].bits == 4
    assert rows["backbone.layer3.0.downsample.module.weight_fake_quant"].bits == 4
    assert rows["backbone.layer3.0.block_post_act_fake_quantize"].bits == 8
    assert rows["backbone.layer3.1.conv1.block_post_act_fake_quantize"].bits == 8
    inner = rows["backbone.layer3.1.conv2.module.weight_fake_quant"]
    assert (inner.bits, inner.symmetric, inner.module) == (6, True, "backbone.layer3.1.conv2")
    assert rows["backbone.layer4.0.conv1.module.weight_fake_quant"].bits == 2
    assert rows["backbone.layer2.1.block_post_act_fake_quantize"].bits == 4


def test_an_entry_matching_nothing_names_the_pattern_and_the_nearest_modules():
    with pytest.raises(
        ValueError,
        match=r"overrides\[1\]\.modules: 'backbone\.layer5\.\*' matches no quantizable "
        r"module; nearest module names: .*backbone\.layer",
    ):
        quantize_detector(
            fused_detector(retinanet_cfg(18)),
            _with_overrides(
                {"modules": "neck.*", "w_qconfig": {"bit": 4}}, {"modules": "backbone.layer5.*", "quantize": False}
            ),
        )


def test_float_inside_a_unit_is_refused():
    with pytest.raises(ValueError, match="backbone.layer1.0.conv2 is a part of one"):
        quantize_detector(
            fused_detector(retinanet_cfg(18)),
            _with_overrides({"modules": "backbone.layer1.0.conv2", "quantize": False}),
        )


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"modules": "neck.*", "w_qconfig": {"bits": 4}}, r"test.yaml: overrides\[0\]\.w_qconfig\.bits: unknown key"),
        ({"modules": "neck.*", "a_qconfig": {"bit": 9}}, r"test.yaml: overrides\[0\]\.a_qconfig\.bit: got 9"),
        ({"modules": "neck.*", "quantize": "no"}, r"test.yaml: overrides\[0\]\.quantize: got 'no'"),
        ({"modules": "", "quantize": False}, r"test.yaml: overrides\[0\]\.modules: got ''"),
        ({"modules": "neck.*"}, r"test.yaml: overrides\[0\]: changes nothing"),
        ({"module": "neck.*", "quantize": False}, r"test.yaml: overrides\[0\]\.module: unknown key"),
    ],
)
def test_bad_entries_name_the_file_and_key(entry, message):
    with pytest.raises(ValueError, match=message):
        _with_overrides(entry)


def test_overrides_survive_the_yaml_form(tmp_path):
    q = _with_overrides(
        {"modules": "neck.fpn_convs.*", "quantize": False}, {"modules": "backbone.layer4.*", "w_qconfig": {"bit": 4}}
    )
    assert q.overrides[1] == ModuleOverride("backbone.layer4.*", w_qconfig=(("bit", 4),))
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(q.to_dict()))
    assert load_q_config(path) == q
    assert "overrides" not in QConfig.from_mapping(q_config()).to_dict()


def test_glob_applies_to_contained_modules_only_at_dot_boundaries():
    entry = ModuleOverride("backbone.layer1", quantize=False)
    assert entry.matches("backbone.layer1.0.conv1") and entry.matches("backbone.layer1")
    assert not entry.matches("backbone.layer10.0")

"""check_model_types / build_detector: unsupported detector, backbone, neck or head types are refused unbuilt."""

import copy
from pathlib import Path

import pytest

from mmdet.models import MODELS, build_detector, build_loss
from mmdet.models.backbones import ResNet
from mmdet.models.builder import UnsupportedModelError, check_model_types, supported_types
from mmdet.utils import UserError, load_config

REPO_ROOT = Path(__file__).resolve().parents[3]
RETINANET = str(REPO_ROOT / "configs/retinanet/retinanet_r50_fpn_1x_coco.py")
FASTER_RCNN = str(REPO_ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py")


def _model(path: str) -> dict:
    return copy.deepcopy(load_config(path).model.to_dict())


def _unregistered(name: str) -> str:
    assert name not in MODELS.module_dict, f"{name} is registered now; the test needs a type that is not"
    return name


def _check_lists(message: str) -> None:
    """The message lists the supported detectors, backbones, necks and heads, computed from the registry."""
    for label, names in (
        ("detectors", ["RetinaNet", "FasterRCNN"]),
        ("backbones", ["ResNet"]),
        ("necks", ["FPN"]),
        ("dense heads", ["RetinaHead", "RPNHead"]),
        ("RoI heads", ["StandardRoIHead", "Shared2FCBBoxHead"]),
    ):
        assert f"{label}: " in message
        listed = message.split(f"{label}: ", 1)[1].split(";", 1)[0]
        assert all(name in listed for name in names), (label, listed)


@pytest.fixture
def nothing_is_built(monkeypatch):
    """Fail if a ResNet (the backbone of every config here) gets constructed: the check must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a module was built before the config was checked")

    monkeypatch.setattr(ResNet, "__init__", refuse)


@pytest.mark.parametrize("detector", ["YOLOV3", "DETR", "NoSuchDetector"])
def test_unsupported_detector_is_refused_naming_type_key_file_and_lists(detector, nothing_is_built):
    model = _model(RETINANET)
    model["type"] = _unregistered(detector)
    with pytest.raises(UnsupportedModelError) as info:
        check_model_types(model, RETINANET)
    message = str(info.value)
    assert f"model.type = '{detector}' in {RETINANET} is not a supported detector" in message
    assert info.value.type_name == detector and info.value.key == "model.type" and info.value.source == RETINANET
    _check_lists(message)
    with pytest.raises(UnsupportedModelError, match=f"model.type = '{detector}'"):
        build_detector(model, source=RETINANET)


def test_unknown_backbone_is_refused_before_building(nothing_is_built):
    model = _model(FASTER_RCNN)
    model["backbone"]["type"] = _unregistered("ResNeSt")
    with pytest.raises(UnsupportedModelError) as info:
        build_detector(model, source=FASTER_RCNN)
    message = str(info.value)
    assert f"model.backbone.type = 'ResNeSt' in {FASTER_RCNN} is not a supported backbone" in message
    assert "(did you mean 'ResNe" in message
    _check_lists(message)
    # still the KeyError that mmengine's registry raised before, and a user error for the command line
    assert isinstance(info.value, KeyError) and isinstance(info.value, UserError)
    assert str(info.value) == message and not message.startswith("'")


def test_without_a_source_the_message_says_so(nothing_is_built):
    model = _model(RETINANET)
    model["backbone"]["type"] = _unregistered("MobileNetV2")
    with pytest.raises(UnsupportedModelError, match="model.backbone.type = 'MobileNetV2' in the model config"):
        build_detector(model)


@pytest.mark.parametrize(
    "edit, key, name",
    [
        (lambda m: m["neck"].update(type="PAFPN"), "model.neck.type", "PAFPN"),
        (lambda m: m.update(neck=[dict(m["neck"]), dict(type="BFP")]), "model.neck.1.type", "BFP"),
        (lambda m: m["rpn_head"].update(type="GARPNHead"), "model.rpn_head.type", "GARPNHead"),
        (lambda m: m["roi_head"].update(type="SparseRoIHead"), "model.roi_head.type", "SparseRoIHead"),
        (
            lambda m: m["roi_head"]["bbox_roi_extractor"].update(type="GenericRoIExtractor"),
            "model.roi_head.bbox_roi_extractor.type",
            "GenericRoIExtractor",
        ),
        (
            lambda m: m["roi_head"].update(bbox_head=[dict(m["roi_head"]["bbox_head"]), dict(type="SABLHead")]),
            "model.roi_head.bbox_head.1.type",
            "SABLHead",
        ),
        (
            lambda m: m["roi_head"].update(mask_head=dict(type="HTCMaskHead")),
            "model.roi_head.mask_head.type",
            "HTCMaskHead",
        ),
    ],
)
def test_nested_module_types_are_checked_with_their_key_path(edit, key, name, nothing_is_built):
    model = _model(FASTER_RCNN)
    edit(model)
    _unregistered(name)
    with pytest.raises(UnsupportedModelError) as info:
        check_model_types(model, FASTER_RCNN)
    assert info.value.key == key and f"{key} = '{name}' in {FASTER_RCNN}" in str(info.value)
    with pytest.raises(UnsupportedModelError, match=f"{key} = '{name}'"):
        build_detector(model, source=FASTER_RCNN)  # the backbone comes first, but is not built


def test_a_type_of_another_kind_is_refused():
    model = _model(RETINANET)
    model["backbone"]["type"] = "FPN"
    with pytest.raises(UnsupportedModelError, match="model.backbone.type = 'FPN' .* is a neck, not a backbone"):
        check_model_types(model, RETINANET)


def test_missing_detector_type_is_refused():
    model = _model(RETINANET)
    del model["type"]
    with pytest.raises(UnsupportedModelError, match="model in .* has no 'type'; it needs a detector type"):
        check_model_types(model, RETINANET)


@pytest.mark.parametrize("path", [RETINANET, FASTER_RCNN])
def test_supported_configs_pass(path):
    check_model_types(_model(path), path)


def test_loss_and_norm_types_are_not_model_types():
    """Losses, coders and norm layers are left to their registries: checking passes, building names the loss."""
    model = _model(RETINANET)
    model["bbox_head"]["loss_cls"]["type"] = _unregistered("VarifocalLoss")
    model["bbox_head"]["bbox_coder"]["type"] = "DeltaXYWHBBoxCoder"
    check_model_types(model, RETINANET)
    with pytest.raises(UnsupportedModelError, match="loss type 'VarifocalLoss' is not registered.*supported losses: "):
        build_loss(dict(type="VarifocalLoss"))


def test_supported_lists_come_from_the_registry():
    types = supported_types()
    assert "RetinaNet" in types["detector"] and "ResNet" in types["backbone"] and "FPN" in types["neck"]
    assert "RetinaHead" in types["dense head"] and "StandardRoIHead" in types["RoI head"]
    assert "FocalLoss" in types["loss"] and "FocalLoss" not in types["dense head"]

"""ONNX export of the one-stage family (FCOS, ATSS, GFL) and of the ResNeXt and RegNet backbones: the graphs compute
the PyTorch model's raw outputs, and ONNX Runtime with the heads' own post-processing gives its detections."""

import numpy as np
import onnx
import pytest
import torch

from helpers.onnx_models import BACKBONES, ONE_STAGE, float_detector, quantized_detector, torch_outputs
from helpers.qdrop_models import image_meta
from qdrop.deploy import OnnxDetector, OnnxGraphError, create_session, export_detector
from qdrop.deploy.compare import QuantizerProbe, compare_outputs
from qdrop.deploy.export import dense_output_kinds, network_output_names

OUTPUT_KINDS = {
    "fcos": ("cls_score", "bbox_pred", "centerness"),
    "fcos_exp": ("cls_score", "bbox_pred", "centerness"),
    "atss": ("cls_score", "bbox_pred", "centerness"),
    "gfl": ("cls_score", "bbox_pred"),
}
HEIGHT, WIDTH = 64, 96


@pytest.fixture(scope="module")
def detectors():
    """Built once per module (the tests only read them): 'float', or 'w4a4' with quant_head: True."""
    built = {}

    def get(name: str, precision: str) -> torch.nn.Module:
        if (name, precision) not in built:
            if precision == "float":
                built[(name, precision)] = float_detector(name)
            else:
                built[(name, precision)] = quantized_detector(name, w_bit=4, a_bit=4, quant_head=True)
        return built[(name, precision)]

    return get


def _image(seed: int = 2) -> torch.Tensor:
    return torch.randn(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


def _assert_outputs_match(got: list, want: list) -> None:
    assert len(got) == len(want)
    for got_tensor, want_tensor in zip(got, want):
        assert got_tensor.shape == tuple(want_tensor.shape)
        np.testing.assert_allclose(
            got_tensor, want_tensor.numpy(), rtol=1e-4, atol=1e-4 * float(want_tensor.abs().max())
        )


@pytest.mark.parametrize("name", sorted(ONE_STAGE))
@pytest.mark.parametrize("precision", ["float", "w4a4"])
def test_graph_reproduces_raw_outputs_and_detections(detectors, name, precision):
    model = detectors(name, precision)
    assert dense_output_kinds(model.bbox_head) == OUTPUT_KINDS[name]
    graph = export_detector(model)["network"]
    names = [output.name for output in graph.graph.output]
    levels = len(model.bbox_head.prior_generator.strides)
    assert names == [f"{kind}_{i}" for kind in OUTPUT_KINDS[name] for i in range(levels)]
    assert names == network_output_names(model)
    quantized_head = {node.name.split("/")[0] for node in graph.graph.node if node.op_type == "QuantizeLinear"}
    assert any(n.startswith("bbox_head.cls_convs.") for n in quantized_head) == (precision == "w4a4")
    assert not any(
        n.startswith(("bbox_head.scales", "bbox_head.conv_", "bbox_head.atss_", "bbox_head.gfl_"))
        for n in quantized_head
    )
    assert "InstanceNormalization" in {node.op_type for node in graph.graph.node}  # the GroupNorm towers

    img = _image()
    session = create_session(graph, optimization="disable", threads=1)
    _assert_outputs_match(session.run(None, {"img": img.numpy()}), torch_outputs(model, img))

    detector = OnnxDetector.from_model(model, optimization="disable", threads=1)
    detector.check_fits("model config", "model.onnx")
    meta = image_meta(HEIGHT, WIDTH)
    with torch.no_grad():
        expected = model(img=[img], img_metas=[[meta]], return_loss=False, rescale=True)
    results = detector(img=[img], img_metas=[[meta]], return_loss=False, rescale=True)
    assert sum(len(boxes) for boxes in expected[0]) > 0
    for got, want in zip(results[0], expected[0]):
        assert got.shape == want.shape
        assert abs(got - want).max(initial=0.0) <= 1e-3


def test_fcos_distances_are_the_eval_mode_forward():
    """norm_on_bbox: relu(scale * reg) * stride; otherwise exp(scale * reg); with a Scale other than 1."""
    img = _image()
    for name in ("fcos", "fcos_exp"):
        model = float_detector(name)
        model.bbox_head.scales[1].scale.data.fill_(0.5)
        graph = export_detector(model)["network"]
        ops = {node.op_type for node in graph.graph.node if node.name.startswith("bbox_head/distances")}
        assert ops == ({"Relu", "Mul"} if name == "fcos" else {"Exp"})
        session = create_session(graph, optimization="disable", threads=1)
        got = dict(zip(network_output_names(model), session.run(None, {"img": img.numpy()})))
        with torch.no_grad():
            _, bbox_preds, _ = model.bbox_head(model.extract_feat(img))
        _assert_outputs_match([got[f"bbox_pred_{level}"] for level in range(len(bbox_preds))], bbox_preds)
        for want in bbox_preds:
            assert (want >= 0).all() if name == "fcos" else (want > 0).all()


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("precision", ["float", "w4a4"])
def test_resnext_and_regnet_backbones_export(name, precision):
    model = float_detector(name) if precision == "float" else quantized_detector(name, w_bit=4)
    graph = export_detector(model)["network"]
    nodes = [node for node in graph.graph.node if node.name.startswith("backbone")]
    groups = [
        next((attr.i for attr in node.attribute if attr.name == "group"), 1) for node in nodes if node.op_type == "Conv"
    ]
    assert max(groups) > 1  # the grouped 3x3 convs
    has_pool = any(node.op_type == "MaxPool" for node in nodes)
    assert has_pool == (name == "resnext")  # RegNet's stem has no max-pool
    img = _image()
    for optimization in ("disable", "all"):
        session = create_session(graph, optimization=optimization, threads=1)
        _assert_outputs_match(session.run(None, {"img": img.numpy()}), torch_outputs(model, img))


def test_graph_of_another_head_does_not_fit(detectors):
    gfl_graph = export_detector(detectors("gfl", "float"))["network"]
    detector = OnnxDetector(detectors("fcos", "float"), {"network": create_session(gfl_graph, "disable", threads=1)})
    with pytest.raises(OnnxGraphError, match=r"gfl\.onnx does not fit .*missing \['centerness_0'"):
        detector.check_fits("fcos.py", "gfl.onnx")


def test_quantized_head_graph_states_four_bit_head_weights(detectors):
    graph = export_detector(detectors("atss", "w4a4"))["network"].graph
    head_weights = {
        tensor.name: onnx.TensorProto.DataType.Name(tensor.data_type)
        for tensor in graph.initializer
        if tensor.name.startswith("bbox_head") and tensor.name.endswith("weight_int")
    }
    prefixes = {name.split("/")[0] for name in head_weights}
    assert {"bbox_head.atss_cls.module", "bbox_head.atss_centerness.module", "bbox_head.cls_convs.0.module"} <= prefixes
    assert set(head_weights.values()) == {"UINT4"}


def test_comparison_covers_every_head_output_and_finds_no_divergence(detectors):
    model = detectors("fcos", "w4a4")
    detector = OnnxDetector.from_model(model, optimization="disable", threads=1)
    img = _image(seed=5)
    differences = compare_outputs(model, detector, img, [image_meta(HEIGHT, WIDTH)])
    assert [difference.name for difference in differences] == network_output_names(model)
    for difference in differences:
        assert difference.max_abs_diff <= 1e-4 * max(1.0, difference.max_abs_value), difference
    probe = QuantizerProbe(export_detector(model)["network"])
    assert any(quantizer.startswith("bbox_head.") and call == 4 for _, quantizer, call in probe.exposed)
    assert probe.first_divergence(model, img) is None

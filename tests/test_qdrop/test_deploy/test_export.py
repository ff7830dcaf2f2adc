"""qdrop.deploy export: the ONNX graphs compute the fake-quantized network, state real bit widths, and refuse bad
input clearly."""

import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from helpers.onnx_models import DETECTORS, quantized_detector, torch_outputs
from qdrop.deploy import create_session, export_detector, integer_weight
from qdrop.deploy.runtime import BIAS_QUANTIZATION, disabled_optimizers
from qdrop.model import placement_table
from qdrop.quantization import AdaRoundFakeQuantize, MinMaxObserver

BIT_TYPES = {("INT4", True), ("UINT4", False), ("INT8", True), ("UINT8", False)}


@pytest.fixture(scope="module")
def detectors():
    """quantized_detector(name, w_bit), built once per module: the tests only read the models."""
    built = {}

    def get(name: str, w_bit: int) -> torch.nn.Module:
        if (name, w_bit) not in built:
            built[(name, w_bit)] = quantized_detector(name, w_bit)
        return built[(name, w_bit)]

    return get


@pytest.mark.parametrize("name", sorted(DETECTORS))
@pytest.mark.parametrize("w_bit", [4, 2])
@pytest.mark.parametrize("optimization", ["disable", "all"])
def test_graph_reproduces_fake_quantized_network(detectors, name, w_bit, optimization):
    model = detectors(name, w_bit)
    graphs = export_detector(model)
    img = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    session = create_session(graphs["network"], optimization=optimization, threads=1)
    onnx_outputs = session.run(None, {"img": img.numpy()})
    expected = torch_outputs(model, img)
    assert len(onnx_outputs) == len(expected)
    for got, want in zip(onnx_outputs, expected):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    if "bbox_head" in graphs:
        roi_feats = torch.randn(7, 16, 7, 7, generator=torch.Generator().manual_seed(3))
        head_outputs = create_session(graphs["bbox_head"], optimization=optimization).run(
            None, {"roi_feats": roi_feats.numpy()}
        )
        with torch.no_grad():
            head_expected = model.roi_head.bbox_head(roi_feats)
        for got, want in zip(head_outputs, head_expected):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def _initializers(graph) -> dict:
    return {tensor.name: tensor for tensor in graph.initializer}


@pytest.mark.parametrize("name", sorted(DETECTORS))
@pytest.mark.parametrize("w_bit", [4, 2])
def test_qdq_pairs_follow_placement_table(detectors, name, w_bit):
    model = detectors(name, w_bit)
    graph = export_detector(model)["network"].graph
    rows = placement_table(model)
    activations = [r for r in rows if r.tensor == "activation"]
    weights = {r.quantizer: r for r in rows if r.tensor == "weight"}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert sorted(n.name.rsplit("/", 1)[0] for n in quantize) == sorted(r.quantizer for r in activations)
    assert len(dequantize) == len(activations) + len(weights)
    initializers = _initializers(graph)
    int_weights = [n for n in dequantize if n.input[0] in initializers]
    assert len(int_weights) == len(weights)
    for node in int_weights:
        layer = node.name.rsplit("/", 1)[0]
        row = weights[f"{layer}.weight_fake_quant"]
        tensor = initializers[node.input[0]]
        type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
        symmetric = type_name.startswith("INT")
        assert (type_name, symmetric) in BIT_TYPES
        assert type_name.endswith("4") == (row.bits <= 4), (layer, type_name, row.bits)
        values = numpy_helper.to_array(tensor).astype(np.int64)
        low, high = (-(2 ** (row.bits - 1)), 2 ** (row.bits - 1) - 1) if symmetric else (0, 2**row.bits - 1)
        assert low <= values.min() and values.max() <= high, (layer, values.min(), values.max())
        assert dict((a.name, a.i) for a in node.attribute)["axis"] == 0
    float_weights = [t for t in graph.initializer if t.name.endswith("/weight")]
    trunk_float = [t.name for t in float_weights if t.name.startswith(("backbone", "neck"))]
    assert trunk_float == []


def test_integer_weight_uses_learned_rounding_not_nearest():
    conv = torch.nn.Conv2d(3, 4, 3)
    quantizer = AdaRoundFakeQuantize(MinMaxObserver, bit=4, ch_axis=0)
    quantizer(conv.weight.detach())
    quantizer.init(conv.weight)
    quantizer.alpha.data = torch.where(torch.rand_like(quantizer.alpha) < 0.5, -1.0, 1.0)
    quantizer.soft_targets = False
    quantizer.disable_observer()
    ints, params = integer_weight(conv.weight, quantizer, "conv.weight_fake_quant")
    scale = torch.from_numpy(params.scale).reshape(-1, 1, 1, 1)
    zero_point = torch.from_numpy(params.zero_point).reshape(-1, 1, 1, 1).float()
    dequantized = (torch.from_numpy(ints).float() - zero_point) * scale
    torch.testing.assert_close(dequantized, quantizer(conv.weight).detach(), rtol=0, atol=1e-6)
    nearest = torch.clamp(torch.round(conv.weight.detach() / scale) + zero_point, 0, 15)
    assert (nearest != torch.from_numpy(ints).float()).any()


def test_opset_too_old_for_int4_is_refused(detectors):
    model = detectors("retinanet", w_bit=4)
    with pytest.raises(ValueError, match=r"UINT4 tensors need opset >= 21, got --opset 20"):
        export_detector(model, opset=20)


def test_eight_bit_model_exports_below_opset_21():
    model = quantized_detector("retinanet", w_bit=8, a_bit=8)
    graph = export_detector(model, opset=17)["network"].graph
    types = {onnx.TensorProto.DataType.Name(t.data_type) for t in graph.initializer if t.name.endswith("weight_int")}
    assert types == {"UINT8"}


def test_four_bit_graphs_keep_float_biases_eight_bit_graphs_run_integer_convs(detectors, tmp_path):
    four_bit = export_detector(detectors("retinanet", w_bit=4))["network"]
    assert disabled_optimizers(four_bit) == [BIAS_QUANTIZATION]
    eight_bit = export_detector(quantized_detector("faster_rcnn", w_bit=8, a_bit=8))["network"]
    assert disabled_optimizers(eight_bit) == []
    optimized = tmp_path / "optimized.onnx"
    create_session(eight_bit, "all", threads=1, optimized_model_path=str(optimized))
    assert "QLinearConv" in {node.op_type for node in onnx.load(str(optimized)).graph.node}


def test_missing_onnxruntime_names_the_extra(detectors, monkeypatch):
    model = detectors("retinanet", w_bit=4)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[deploy\]"):
        create_session(export_detector(model)["network"])

"""ONNX export of Cascade R-CNN (one box-head graph per stage) and Mask R-CNN (a mask-head graph with its
ConvTranspose2d): the graphs compute the PyTorch heads, and ONNX Runtime with the RoI head's own test path in between
gives the PyTorch detections and masks."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from helpers.onnx_models import TWO_STAGE, float_detector, quantized_detector, torch_outputs
from helpers.qdrop_models import image_meta
from qdrop.deploy import OnnxDetector, OnnxGraphError, create_session, export_detector, integer_weight, save_graphs
from qdrop.deploy.compare import compare_outputs
from qdrop.quantization import (
    AdaRoundFakeQuantize,
    MinMaxObserver,
    QConvTranspose2d,
    enable_calibration,
    enable_quantization,
)

HEIGHT, WIDTH = 64, 96
GRAPHS = {
    "cascade_rcnn": ["network", "bbox_head", "bbox_head1", "bbox_head2"],
    "mask_rcnn": ["network", "bbox_head", "mask_head"],
    "faster_rcnn": ["network", "bbox_head"],
}
# The head graphs' outputs as compare_outputs names them.
HEAD_OUTPUTS = {
    "cascade_rcnn": [
        f"{part}{output}" for part in ("", "bbox_head1/", "bbox_head2/") for output in ("cls_score", "bbox_pred")
    ],
    "mask_rcnn": ["cls_score", "bbox_pred", "mask_head/mask_pred"],
}
FILES = {
    "network": "model.onnx",
    "bbox_head": "model.bbox_head.onnx",
    "bbox_head1": "model.bbox_head1.onnx",
    "bbox_head2": "model.bbox_head2.onnx",
    "mask_head": "model.mask_head.onnx",
}


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


def _stages(model) -> list:
    heads = model.roi_head.bbox_head
    return list(heads) if isinstance(heads, torch.nn.ModuleList) else [heads]


def _close(got: np.ndarray, want: torch.Tensor) -> None:
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4 * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_files_one_per_head(detectors, name, tmp_path):
    model = detectors(name, "float")
    graphs = export_detector(model)
    assert list(graphs) == GRAPHS[name]
    files = save_graphs(graphs, str(tmp_path / "model.onnx"))
    assert {part: path.rsplit("/", 1)[-1] for part, path in files.items()} == {
        part: FILES[part] for part in GRAPHS[name]
    }
    detector = OnnxDetector.from_file(model, str(tmp_path / "model.onnx"), optimization="disable", threads=1)
    assert sorted(detector.sessions) == sorted(GRAPHS[name])
    (tmp_path / FILES[GRAPHS[name][-1]]).unlink()
    with pytest.raises(OnnxGraphError, match=rf"{FILES[GRAPHS[name][-1]]}: no such ONNX file"):
        OnnxDetector.from_file(model, str(tmp_path / "model.onnx"))
    with pytest.raises(ValueError, match=r"needs ONNX graphs \[.*'bbox_head'"):
        OnnxDetector(model, {"network": detector.sessions["network"]})


@pytest.mark.parametrize("name", sorted(TWO_STAGE))
@pytest.mark.parametrize("precision", ["float", "w4a4"])
def test_graphs_reproduce_heads_detections_and_masks(detectors, name, precision):
    model = detectors(name, precision)
    graphs = export_detector(model)
    img = _image()
    network = create_session(graphs["network"], optimization="disable", threads=1)
    for got, want in zip(network.run(None, {"img": img.numpy()}), torch_outputs(model, img)):
        _close(got, want)

    roi_feats = torch.randn(9, 16, 7, 7, generator=torch.Generator().manual_seed(3))
    for stage, head in enumerate(_stages(model)):
        part = "bbox_head" if stage == 0 else f"bbox_head{stage}"
        session = create_session(graphs[part], optimization="disable", threads=1)
        with torch.no_grad():
            want = head(roi_feats)
        for got, expected in zip(session.run(["cls_score", "bbox_pred"], {"roi_feats": roi_feats.numpy()}), want):
            _close(got, expected)
    if name == "mask_rcnn":
        mask_feats = torch.randn(5, 16, 14, 14, generator=torch.Generator().manual_seed(4))
        session = create_session(graphs["mask_head"], optimization="disable", threads=1)
        (got,) = session.run(["mask_pred"], {"mask_roi_feats": mask_feats.numpy()})
        with torch.no_grad():
            _close(got, model.roi_head.mask_head(mask_feats))
        assert got.shape == (5, 6, 28, 28)

    detector = OnnxDetector.from_model(model, optimization="disable", threads=1)
    meta = image_meta(HEIGHT, WIDTH)
    with torch.no_grad():
        expected = model(img=[img], img_metas=[[meta]], return_loss=False, rescale=True)
    results = detector(img=[img], img_metas=[[meta]], return_loss=False, rescale=True)
    if name == "mask_rcnn":
        (boxes, masks), (expected_boxes, expected_masks) = results[0], expected[0]
        assert len(masks) == len(expected_masks) == 6
        for got_masks, want_masks in zip(masks, expected_masks):
            assert len(got_masks) == len(want_masks)
            for got_mask, want_mask in zip(got_masks, want_masks):
                assert got_mask.shape == (HEIGHT, WIDTH) and got_mask.dtype == np.bool_
                np.testing.assert_array_equal(got_mask, want_mask)
    else:
        boxes, expected_boxes = results[0], expected[0]
    assert sum(len(b) for b in expected_boxes) > 0
    for got, want in zip(boxes, expected_boxes):
        assert got.shape == want.shape
        assert abs(got - want).max(initial=0.0) <= 1e-3

    differences = compare_outputs(model, detector, img, [meta])
    head_names = [difference.name for difference in differences if not difference.name.startswith(("feat_", "rpn_"))]
    assert head_names == HEAD_OUTPUTS[name]
    for difference in differences:
        assert difference.max_abs_diff <= 1e-4 * max(1.0, difference.max_abs_value), difference


def test_cascade_stages_are_quantized_in_their_own_graphs(detectors):
    graphs = export_detector(detectors("cascade_rcnn", "w4a4"))
    for stage in range(3):
        part = "bbox_head" if stage == 0 else f"bbox_head{stage}"
        graph = graphs[part].graph
        quantized = {node.name.split("/")[0] for node in graph.node if node.op_type == "QuantizeLinear"}
        prefix = f"roi_head.bbox_head.{stage}"
        assert quantized == {f"{prefix}.shared_fcs.{i}.block_post_act_fake_quantize" for i in range(2)}
        weights = {t.name.split("/")[0] for t in graph.initializer if t.name.endswith("weight_int")}
        layers = ("shared_fcs.0", "shared_fcs.1", "fc_cls", "fc_reg")
        assert weights == {f"{prefix}.{layer}.module" for layer in layers}


def _attributes(node) -> dict:
    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


@pytest.mark.parametrize("precision", ["float", "w4a4"])
def test_mask_head_upsample_is_a_conv_transpose_with_weights_dequantized_per_output_channel(detectors, precision):
    model = detectors("mask_rcnn", precision)
    graph = export_detector(model)["mask_head"].graph
    (deconv,) = [node for node in graph.node if node.op_type == "ConvTranspose"]
    layer = "roi_head.mask_head.upsample"
    assert deconv.name == (f"{layer}.module" if precision == "w4a4" else layer)
    attributes = _attributes(deconv)
    assert attributes["kernel_shape"] == [2, 2] and attributes["strides"] == [2, 2]
    assert attributes["pads"] == [0, 0, 0, 0] and attributes["output_padding"] == [0, 0]
    producers = {node.output[0]: node for node in graph.node}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    if precision == "float":
        assert deconv.input[1] in initializers and not any(node.op_type == "QuantizeLinear" for node in graph.node)
        return
    dequantize = producers[deconv.input[1]]
    assert dequantize.op_type == "DequantizeLinear" and _attributes(dequantize)["axis"] == 1
    ints = initializers[dequantize.input[0]]
    assert onnx.TensorProto.DataType.Name(ints.data_type) == "UINT4" and list(ints.dims) == [16, 16, 2, 2]
    assert numpy_helper.to_array(initializers[dequantize.input[1]]).shape == (16,)  # one scale per output channel
    quantized = [node.name.split("/")[0] for node in graph.node if node.op_type == "QuantizeLinear"]
    assert quantized == [
        "roi_head.mask_head.convs.0.block_post_act_fake_quantize",
        "roi_head.mask_head.convs.1.block_post_act_fake_quantize",
        "roi_head.mask_head.upsample.block_post_act_fake_quantize",
    ]


def test_integer_weight_of_a_transposed_conv_runs_along_axis_1():
    deconv = torch.nn.ConvTranspose2d(3, 5, 2, stride=2)
    w_cfg = dict(quantizer="AdaRoundFakeQuantize", observer="MinMaxObserver", bit=4, symmetric=True, ch_axis=0)
    layer = QConvTranspose2d(deconv, w_cfg)
    quantizer = layer.weight_fake_quant
    enable_calibration(layer)
    quantizer(layer.weight)
    quantizer.init(layer.weight)
    quantizer.alpha.data = torch.randn(quantizer.alpha.shape, generator=torch.Generator().manual_seed(0))
    quantizer.soft_targets = False
    enable_quantization(layer)
    ints, params = integer_weight(layer.weight, quantizer, "up.weight_fake_quant", channel_axis=1)
    assert ints.shape == (3, 5, 2, 2) and params.axis == 1 and params.scale.shape == (5,)
    assert ints.min() >= -8 and ints.max() <= 7
    scale = torch.from_numpy(params.scale).reshape(1, 5, 1, 1)
    torch.testing.assert_close(
        torch.from_numpy(ints).float() * scale, quantizer(layer.weight).detach(), rtol=0, atol=1e-6
    )
    with pytest.raises(ValueError, match=r"output channels \(axis 0\) to export, got ch_axis 1"):
        integer_weight(layer.weight, quantizer, "up.weight_fake_quant")
    # a per-tensor quantizer's scale is repeated along the output channels of either layout
    per_tensor = AdaRoundFakeQuantize(MinMaxObserver, bit=4, symmetric=True, ch_axis=-1)
    per_tensor(layer.weight.detach())
    _, per_tensor_params = integer_weight(layer.weight, per_tensor, "up.weight_fake_quant", channel_axis=1)
    assert per_tensor_params.axis == 1 and per_tensor_params.scale.shape == (5,)


def test_faster_rcnn_box_head_graph_keeps_its_names():
    box_graph = export_detector(float_detector("faster_rcnn"))["bbox_head"].graph
    assert box_graph.name == "FasterRCNN_bbox_head"
    assert [i.name for i in box_graph.input] == ["roi_feats"]
    assert [o.name for o in box_graph.output] == ["cls_score", "bbox_pred"]

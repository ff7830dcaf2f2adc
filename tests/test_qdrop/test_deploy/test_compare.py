"""qdrop.deploy.compare: where an exported graph and its PyTorch model first part ways, and why."""

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from helpers.onnx_models import quantized_detector
from qdrop.deploy import export_detector
from qdrop.deploy.compare import TIE_TOLERANCE, Divergence, QuantizerProbe, distance_to_tie


@pytest.fixture(scope="module")
def retinanet():
    return quantized_detector("retinanet", w_bit=4)


def _image() -> torch.Tensor:
    return torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))


def test_distance_to_tie_per_tensor_and_per_channel():
    x = torch.tensor([[0.5, 1.0], [0.26, -0.75]])  # (C=2, 2)
    per_tensor = distance_to_tie(x, torch.tensor([0.5]), ch_axis=-1)  # x / s: 1, 2, 0.52, -1.5
    torch.testing.assert_close(per_tensor, torch.tensor([[0.5, 0.5], [0.02, 0.0]]))
    per_channel = distance_to_tie(x, torch.tensor([1.0, 0.5]), ch_axis=0)  # 0.5, 1, 0.52, -1.5
    torch.testing.assert_close(per_channel, torch.tensor([[0.0, 0.5], [0.02, 0.0]]))


def test_exact_export_has_no_divergence(retinanet):
    probe = QuantizerProbe(export_detector(retinanet)["network"])
    assert probe.first_divergence(retinanet, _image()) is None


def test_wrong_weight_scale_is_found_where_it_enters_and_not_blamed_on_ties(retinanet):
    graph = export_detector(retinanet)["network"]
    layer = "backbone.layer1.0.conv1.module"
    (scale,) = [t for t in graph.graph.initializer if t.name == f"{layer}/scale"]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(1.5), scale.name))
    divergence = QuantizerProbe(graph).first_divergence(retinanet, _image())
    assert divergence is not None
    assert divergence.quantizer == "backbone.layer1.0.conv1.block_post_act_fake_quantize"
    assert divergence.call == 0 and 0 < divergence.elements <= divergence.total
    assert not divergence.at_rounding_ties
    assert "the graph computes something else" in divergence.describe()


def test_divergence_on_ties_is_reported_as_summation_order():
    divergence = Divergence("neck.lateral_convs.0.block_post_act_fake_quantize", 2, 1, 100, TIE_TOLERANCE / 10)
    assert divergence.at_rounding_ties
    assert "(call 2)" in divergence.describe() and "float summation order" in divergence.describe()

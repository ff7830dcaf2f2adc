"""Quantized modules, builders and the model-wide state helpers."""

import pytest
import torch
from torch import nn

from qdrop.quantization import (
    ActivationQuantizer,
    AdaRoundFakeQuantize,
    LSQFakeQuantize,
    QConv2d,
    QLinear,
    QuantizedBlock,
    QuantizedLayer,
    QuantizedUnit,
    WeightQuantizer,
    disable_all,
    enable_calibration,
    enable_quantization,
    fake_quantizers,
    quantizer_kind,
    weight_quantized,
    weight_quantized_layers,
)

A_CFG = {"quantizer": "LSQFakeQuantize", "observer": "AvgMSEFastObserver", "bit": 4, "symmetric": False, "ch_axis": -1}
W_CFG = {"quantizer": "AdaRoundFakeQuantize", "observer": "MSEObserver", "bit": 2, "symmetric": False, "ch_axis": 0}


def test_builders_make_configured_quantizers():
    a = ActivationQuantizer(A_CFG)
    w = WeightQuantizer(W_CFG)
    assert isinstance(a, LSQFakeQuantize) and a.bit == 4 and a.ch_axis == -1
    assert isinstance(w, AdaRoundFakeQuantize) and (w.quant_min, w.quant_max) == (0, 3) and w.ch_axis == 0
    assert type(w.activation_post_process).__name__ == "MSEObserver"


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"quantizer": "RoundQuantize"}, r"quantizer.*FixedFakeQuantize"),
        ({"observer": "PercentileObserver"}, r"observer.*MinMaxObserver"),
        ({"bit": 1}, r"bit.*2\.\.8"),
        ({"bit": 9}, r"bit.*2\.\.8"),
        ({"ch_axis": -2}, r"ch_axis.*-1"),
        ({"extra": 1}, r"extra.*allowed keys"),
    ],
)
def test_builders_reject_bad_configs(bad, match):
    with pytest.raises(ValueError, match=match):
        WeightQuantizer({**W_CFG, **bad})


def test_builder_rejects_missing_key():
    cfg = dict(A_CFG)
    del cfg["symmetric"]
    with pytest.raises(ValueError, match="symmetric.*missing"):
        ActivationQuantizer(cfg)


def test_weight_quantized_keeps_parameters_and_names():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
    qconv = weight_quantized(conv, W_CFG)
    assert isinstance(qconv, QConv2d)
    assert qconv.weight is conv.weight and qconv.bias is conv.bias
    assert {"weight", "bias"} <= set(dict(qconv.named_parameters()))
    linear = nn.Linear(5, 2)
    qlinear = weight_quantized(linear, W_CFG)
    assert isinstance(qlinear, QLinear) and qlinear.weight is linear.weight
    with pytest.raises(ValueError, match="nn.Conv2d, nn.Linear"):
        weight_quantized(nn.ReLU(), W_CFG)


def test_quantized_layer_forward_and_full_precision_when_disabled():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    layer = QuantizedLayer(conv, nn.ReLU(), W_CFG, A_CFG, qoutput=True)
    x = torch.randn(1, 3, 6, 6)
    disable_all(layer)
    torch.testing.assert_close(layer(x), torch.relu(conv(x)))
    enable_calibration(layer, "all")
    layer(x)
    enable_quantization(layer, "all")
    out = layer(x)
    assert out.unique().numel() <= 16  # 4-bit output quantizer
    without_output = QuantizedLayer(nn.Linear(4, 3), None, W_CFG, qoutput=False)
    assert not hasattr(without_output, "block_post_act_fake_quantize")


def test_quantized_block_base_class():
    class Block(QuantizedBlock):
        def __init__(self):
            super().__init__(qoutput=True, a_cfg=A_CFG)
            self.layer = QuantizedLayer(nn.Conv2d(2, 2, 1), nn.ReLU(), W_CFG, A_CFG, qoutput=False)

        def forward(self, x):
            return self.quantize_output(self.layer(x) + x)

    block = Block()
    assert block.qoutput
    names = [name for name, _ in fake_quantizers(block)]
    assert names == ["block_post_act_fake_quantize", "layer.module.weight_fake_quant"]
    with pytest.raises(ValueError, match="QuantizedBlock: qoutput=True needs an a_qconfig"):
        QuantizedBlock(qoutput=True)


def test_layers_and_blocks_are_units_and_a_layer_is_no_block():
    layer = QuantizedLayer(nn.Conv2d(2, 2, 1), None, W_CFG, qoutput=False)
    assert isinstance(layer, QuantizedUnit) and not isinstance(layer, QuantizedBlock)
    assert issubclass(QuantizedBlock, QuantizedUnit)


def _model():
    return nn.Sequential(
        QuantizedLayer(nn.Conv2d(3, 4, 3), nn.ReLU(), W_CFG, A_CFG),
        QuantizedLayer(nn.Conv2d(4, 2, 1), None, W_CFG, A_CFG),
    )


def test_state_helpers_by_kind():
    model = _model()
    assert [quantizer_kind(n) for n, _ in fake_quantizers(model)] == ["activation", "weight"] * 2
    enable_calibration(model, "activation")
    for name, q in fake_quantizers(model):
        assert q.observer_enabled == (quantizer_kind(name) == "activation") and not q.fake_quant_enabled
    enable_quantization(model, "weight")
    for name, q in fake_quantizers(model):
        assert not q.observer_enabled and q.fake_quant_enabled == (quantizer_kind(name) == "weight")
    disable_all(model)
    assert not any(q.observer_enabled or q.fake_quant_enabled for _, q in fake_quantizers(model))
    with pytest.raises(ValueError, match="activation, weight, all"):
        enable_calibration(model, "weights")
    with pytest.raises(ValueError, match="activation, weight, all"):
        list(fake_quantizers(model, "weights"))


def test_weight_quantized_layers_pair_each_layer_with_its_quantizer():
    model = nn.Sequential(_model(), QuantizedLayer(nn.Linear(3, 2), nn.ReLU(), W_CFG, A_CFG))
    pairs = list(weight_quantized_layers(model))
    assert [type(layer) for layer, _ in pairs] == [QConv2d, QConv2d, QLinear]
    assert all(quantizer is layer.weight_fake_quant for layer, quantizer in pairs)
    assert [q for _, q in pairs] == [q for _, q in fake_quantizers(model, "weight")]


def test_quantized_model_state_dict_round_trip():
    model = _model()
    x = torch.rand(2, 3, 8, 8)
    enable_calibration(model, "all")
    model(x)
    for name, q in fake_quantizers(model, "weight"):
        q.init(model.get_submodule(name.rsplit(".", 1)[0]).weight, "learned_hard_sigmoid")
    enable_quantization(model, "all")
    for _, q in fake_quantizers(model, "weight"):
        q.soft_targets = False
    expected = model(x)
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    enable_quantization(fresh, "all")
    assert fresh[0].module.weight_fake_quant.scale.shape == (4,)
    assert fresh[0].module.weight_fake_quant.alpha.shape == (4, 3, 3, 3)
    torch.testing.assert_close(fresh(x), expected)

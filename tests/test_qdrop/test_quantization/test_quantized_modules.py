"""Quantized modules, builders and the model-wide state helpers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qdrop.quantization import (
    ActivationQuantizer,
    AdaRoundFakeQuantize,
    LSQFakeQuantize,
    QConv2d,
    QConvTranspose2d,
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
    with pytest.raises(ValueError, match="nn.Conv2d, nn.ConvTranspose2d, nn.Linear"):
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


# ------------------------------------------------------------------------------------------ transposed convolutions
W4_PER_CHANNEL = {**W_CFG, "observer": "MinMaxObserver", "bit": 4}


def _deconv(groups: int = 1) -> nn.ConvTranspose2d:
    """Mask R-CNN's upsample in small: 2x2, stride 2; 6 input and 4 output channels, weight (6, 4 / groups, 2, 2)."""
    torch.manual_seed(0)
    return nn.ConvTranspose2d(6, 4, 2, stride=2, groups=groups)


def _calibrated(layer: nn.Module) -> nn.Module:
    """The weight quantizers observe their weights once, then quantize them (activation quantizers off)."""
    enable_calibration(layer, "weight")
    for module, quantizer in weight_quantized_layers(layer):
        quantizer(module.weight)
    enable_quantization(layer, "weight")
    return layer


def test_transposed_conv_keeps_parameters_and_quantizes_per_output_channel_on_axis_1():
    deconv = _deconv()
    qdeconv = weight_quantized(deconv, W4_PER_CHANNEL)
    assert isinstance(qdeconv, QConvTranspose2d) and QConvTranspose2d.OUTPUT_CHANNEL_AXIS == 1
    assert qdeconv.weight is deconv.weight and qdeconv.bias is deconv.bias
    assert set(dict(qdeconv.named_parameters())) == {"weight", "bias"}
    assert (qdeconv.stride, qdeconv.kernel_size, qdeconv.output_padding) == ((2, 2), (2, 2), (0, 0))
    quantizer = _calibrated(qdeconv).weight_fake_quant
    assert quantizer.ch_axis == 1
    # one scale per output channel: the min/max of weight[:, c] over input channels and kernel positions
    per_output = deconv.weight.detach().transpose(0, 1).reshape(4, -1)
    low, high = per_output.min(dim=1).values.clamp(max=0), per_output.max(dim=1).values.clamp(min=0)
    assert quantizer.scale.shape == (4,)
    torch.testing.assert_close(quantizer.scale, (high - low) / 15)
    levels = (deconv.weight.detach() / quantizer.scale.reshape(1, 4, 1, 1)).transpose(0, 1).reshape(4, -1)
    assert (levels.max(dim=1).values - levels.min(dim=1).values).sub(15).abs().max() < 1e-4  # every channel spans 15


def test_transposed_conv_forward_and_full_precision_when_disabled():
    deconv = _deconv()
    layer = QuantizedLayer(deconv, nn.ReLU(), W4_PER_CHANNEL, A_CFG, qoutput=False)
    x = torch.randn(2, 6, 5, 7)
    disable_all(layer)
    torch.testing.assert_close(layer(x), torch.relu(deconv(x)))
    _calibrated(layer)
    weight = layer.module.weight_fake_quant(deconv.weight).detach()
    out = layer(x)
    assert out.shape == (2, 4, 10, 14)
    torch.testing.assert_close(out, torch.relu(F.conv_transpose2d(x, weight, deconv.bias, stride=2)))
    assert not torch.equal(weight, deconv.weight.detach())
    assert isinstance(layer.module, QConvTranspose2d)
    assert [type(module) for module, _ in weight_quantized_layers(layer)] == [QConvTranspose2d]


@pytest.mark.parametrize("fast", [False, True])
def test_adaround_rounds_transposed_conv_weights_per_output_channel(fast):
    qdeconv = _calibrated(weight_quantized(_deconv(), W4_PER_CHANNEL))
    quantizer = qdeconv.weight_fake_quant
    quantizer.fast = fast
    weight = qdeconv.weight.detach()
    quantizer.init(weight)
    assert quantizer.alpha.shape == weight.shape
    s = quantizer.scale.reshape(1, 4, 1, 1)
    z = quantizer.zero_point.reshape(1, 4, 1, 1)
    # alpha starts where the rectified sigmoid is frac(w / s): the soft weight is the weight, clamped to the range
    # of its own output channel
    torch.testing.assert_close(quantizer.rectified_sigmoid(), weight / s - torch.floor(weight / s), atol=1e-5, rtol=0)
    in_range = torch.maximum(torch.minimum(weight, (15 - z) * s), -z * s)
    torch.testing.assert_close(quantizer(weight), in_range, atol=1e-5, rtol=0)
    quantizer.alpha.data = torch.randn(weight.shape, generator=torch.Generator().manual_seed(1))
    quantizer.soft_targets = False
    hard = quantizer(weight)
    expected = (torch.clamp(torch.floor(weight / s) + (quantizer.alpha >= 0).float() + z, 0, 15) - z) * s
    torch.testing.assert_close(hard, expected.detach(), rtol=0, atol=0)
    torch.testing.assert_close(quantizer.get_hard_value(weight), expected.detach(), rtol=0, atol=0)
    steps = hard / s  # on each output channel's own grid
    torch.testing.assert_close(steps, steps.round(), atol=1e-4, rtol=0)
    quantizer.soft_targets = True
    soft = quantizer(weight)
    soft.sum().backward()
    assert quantizer.alpha.grad is not None and quantizer.alpha.grad.abs().sum() > 0


def test_grouped_transposed_conv_is_quantized_per_tensor_only():
    with pytest.raises(ValueError, match=r"grouped ConvTranspose2d \(groups=2\).*ch_axis -1"):
        weight_quantized(_deconv(groups=2), W4_PER_CHANNEL)
    per_tensor = weight_quantized(_deconv(groups=2), {**W4_PER_CHANNEL, "ch_axis": -1})
    assert per_tensor.weight_fake_quant.ch_axis == -1
    x = torch.randn(1, 6, 3, 3)
    assert _calibrated(per_tensor)(x).shape == (1, 4, 6, 6)

"""Fake quantizers: observer hand-off, LSQ scale handling, AdaRound, drop_prob, state_dict round trips."""

import math

import pytest
import torch

from qdrop.quantization import (
    AdaRoundFakeQuantize,
    FixedFakeQuantize,
    LSQFakeQuantize,
    LSQPlusFakeQuantize,
    MinMaxObserver,
    MSEObserver,
)

QUANTIZERS = [FixedFakeQuantize, LSQFakeQuantize, LSQPlusFakeQuantize, AdaRoundFakeQuantize]


@pytest.mark.parametrize("quantizer_cls", QUANTIZERS)
def test_observer_sets_qparams_and_quantizes(quantizer_cls):
    fq = quantizer_cls(MinMaxObserver, bit=4)
    x = torch.linspace(-1.0, 2.0, 50)
    out = fq(x)
    torch.testing.assert_close(fq.scale.detach(), torch.tensor([0.2]))
    torch.testing.assert_close(fq.zero_point.detach(), torch.tensor([5.0]))
    expected = (torch.clamp(torch.round(x / 0.2) + 5, 0, 15) - 5) * 0.2
    torch.testing.assert_close(out.detach(), expected)
    fq.disable_fake_quant()
    assert torch.equal(fq(x), x)


@pytest.mark.parametrize("quantizer_cls", QUANTIZERS)
def test_disabled_observer_keeps_qparams(quantizer_cls):
    fq = quantizer_cls(MinMaxObserver, bit=8)
    fq(torch.tensor([-1.0, 1.0]))
    fq.disable_observer()
    scale = fq.scale.detach().clone()
    fq(torch.tensor([-10.0, 10.0]))
    torch.testing.assert_close(fq.scale.detach(), scale)


@pytest.mark.parametrize("quantizer_cls", QUANTIZERS)
def test_set_qparams_from_observer_follows_a_changed_range(quantizer_cls):
    fq = quantizer_cls(MinMaxObserver, bit=4, ch_axis=0)
    fq(torch.tensor([[-1.0, 2.0], [0.0, 3.0], [-2.0, 1.0]]))
    assert fq.scale.shape == (3,)
    fq.disable_observer()
    observer = fq.activation_post_process
    observer.min_val, observer.max_val = torch.tensor([-1.5]), torch.tensor([3.0])  # as averaged over ranks
    fq.set_qparams_from_observer()
    torch.testing.assert_close(fq.scale.detach(), torch.tensor([0.3]))
    torch.testing.assert_close(fq.zero_point.detach(), torch.tensor([5.0]))


@pytest.mark.parametrize("ch_axis", [0, 1])
def test_per_channel_quantizer(ch_axis):
    fq = FixedFakeQuantize(MinMaxObserver, bit=4, ch_axis=ch_axis)
    x = torch.randn(3, 5, 2)
    out = fq(x)
    assert fq.scale.shape == (x.shape[ch_axis],)
    for c in range(x.shape[ch_axis]):
        xc = x.select(ch_axis, c)
        s, z = fq.scale[c], fq.zero_point[c]
        torch.testing.assert_close(out.select(ch_axis, c), (torch.clamp(torch.round(xc / s) + z, 0, 15) - z) * s)


def test_lsq_scale_is_parameter_and_kept_positive():
    fq = LSQFakeQuantize(MinMaxObserver, bit=4)
    assert isinstance(fq.scale, torch.nn.Parameter)
    fq(torch.randn(100))
    fq.disable_observer()
    with torch.no_grad():
        fq.scale.fill_(-0.5)
    fq(torch.randn(10))
    assert float(fq.scale.detach()) == 0.5
    with torch.no_grad():
        fq.scale.zero_()
    fq.keep_scale_positive()
    assert float(fq.scale.detach()) == torch.finfo(torch.float32).eps


def test_lsq_scale_gradient_flows():
    fq = LSQFakeQuantize(MinMaxObserver, bit=4)
    x = torch.randn(64)
    fq(x)
    fq.disable_observer()
    fq(x).pow(2).sum().backward()
    assert fq.scale.grad is not None and fq.scale.grad.abs().item() > 0


def test_lsq_plus_zero_point_learnable():
    fq = LSQPlusFakeQuantize(MinMaxObserver, bit=4)
    assert isinstance(fq.zero_point, torch.nn.Parameter)
    x = torch.randn(64) - 2
    fq(x)
    fq.disable_observer()
    with torch.no_grad():
        fq.zero_point.add_(0.3)  # 0.3 off an integer: rounded straight-through
    out = fq(x)
    z = torch.round(fq.zero_point.detach())
    s = fq.scale.detach()
    torch.testing.assert_close(out.detach(), (torch.clamp(torch.round(x / s) + z, 0, 15) - z) * s)
    (out * torch.randn_like(out)).sum().backward()
    assert fq.zero_point.grad is not None


def _adaround(weight, ch_axis=0, bit=4):
    fq = AdaRoundFakeQuantize(MinMaxObserver, bit=bit, ch_axis=ch_axis)
    fq(weight)
    fq.disable_observer()
    fq.init(weight, "learned_hard_sigmoid")
    return fq


def test_adaround_initial_alpha_soft_and_hard_values():
    weight = torch.randn(4, 3, 3, 3)
    fq = _adaround(weight)
    s = fq.scale.view(-1, 1, 1, 1)
    z = fq.zero_point.view(-1, 1, 1, 1)
    rest = weight / s - torch.floor(weight / s)
    # rectified sigmoid of the initial alpha equals frac(w / s)
    torch.testing.assert_close(fq.rectified_sigmoid(), rest, atol=1e-5, rtol=1e-5)
    h_manual = torch.clamp(torch.sigmoid(fq.alpha) * 1.2 - 0.1, 0, 1)
    torch.testing.assert_close(fq.rectified_sigmoid(), h_manual)
    soft = fq(weight)
    torch.testing.assert_close(soft, (torch.clamp(torch.floor(weight / s) + h_manual + z, 0, 15) - z) * s)
    # soft value at initialisation reproduces the weight wherever it is not clamped
    torch.testing.assert_close(soft, (torch.clamp(weight / s + z, 0, 15) - z) * s, atol=1e-5, rtol=1e-5)
    hard = fq.get_hard_value(weight)
    expected = (torch.clamp(torch.floor(weight / s) + (fq.alpha >= 0).float() + z, 0, 15) - z) * s
    torch.testing.assert_close(hard, expected)
    fq.soft_targets = False
    torch.testing.assert_close(fq(weight), hard)
    # hard rounding rounds up exactly where the rectified sigmoid is at least 0.5 (alpha >= 0)
    assert torch.equal(fq.alpha >= 0, fq.rectified_sigmoid() >= 0.5)


def test_adaround_round_loss_and_gradient():
    weight = torch.randn(3, 8)
    fq = _adaround(weight, ch_axis=0)
    h = fq.rectified_sigmoid()
    torch.testing.assert_close(fq.round_loss(2.0), (1 - (2 * h - 1).abs().pow(2.0)).sum())
    (fq(weight).sum() + fq.round_loss(20.0)).backward()
    assert fq.alpha.grad is not None and torch.isfinite(fq.alpha.grad).all()


def test_adaround_rejects_unknown_round_mode():
    fq = AdaRoundFakeQuantize(MinMaxObserver, bit=4)
    fq(torch.randn(10))
    with pytest.raises(ValueError, match="round_mode.*learned_hard_sigmoid"):
        fq.init(torch.randn(10), "nearest")


@pytest.mark.parametrize("quantizer_cls", QUANTIZERS)
def test_drop_prob_mixes_quantized_and_full_precision(quantizer_cls):
    fq = quantizer_cls(MinMaxObserver, bit=2)
    x = torch.randn(20000) + 0.123
    fq(x)
    fq.disable_observer()
    quantized = fq(x).detach()
    fq.drop_prob = 0.3
    mixed = fq(x).detach()
    is_q = mixed == quantized
    is_fp = mixed == x
    differs = quantized != x
    assert bool((is_q | is_fp).all())
    fraction = is_q[differs].float().mean().item()
    assert abs(fraction - 0.3) < 0.02
    fq.drop_prob = 1.0
    assert torch.equal(fq(x).detach(), quantized)


def _fresh_copy(fq):
    return type(fq)(MSEObserver, bit=fq.bit, symmetric=fq.symmetric, ch_axis=fq.ch_axis)


@pytest.mark.parametrize("quantizer_cls", QUANTIZERS)
def test_state_dict_round_trip_per_channel(quantizer_cls):
    weight = torch.randn(6, 4, 3, 3)
    fq = quantizer_cls(MSEObserver, bit=4, ch_axis=0)
    fq(weight)
    fq.disable_observer()
    if isinstance(fq, AdaRoundFakeQuantize):
        fq.init(weight, "learned_hard_sigmoid")
        with torch.no_grad():
            fq.alpha.add_(torch.randn_like(fq.alpha))
        fq.soft_targets = False
    expected = fq(weight).detach()
    fresh = _fresh_copy(fq)
    fresh.load_state_dict(fq.state_dict())
    fresh.disable_observer()
    assert fresh.scale.shape == (6,) and fresh.zero_point.shape == (6,)
    assert fresh.activation_post_process.min_val.shape == (6,)
    if isinstance(fq, AdaRoundFakeQuantize):
        assert torch.equal(fresh.alpha, fq.alpha)
    torch.testing.assert_close(fresh(weight).detach(), expected)


def test_qparams_follow_module_device_and_dtype():
    fq = FixedFakeQuantize(MinMaxObserver, bit=8).double()
    fq(torch.randn(10, dtype=torch.float64))
    assert fq.scale.dtype == torch.float64 and not math.isnan(float(fq.scale))

"""The fused fake-quantization path against the plain one: identical forward values, the same gradients of the
input, the scales, the zero points and AdaRound's alpha, the same drop mask."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.qdrop_models import fused_detector, q_config, retinanet_cfg
from qdrop.model import quantize_detector
from qdrop.quantization import (
    AdaRoundFakeQuantize,
    FixedFakeQuantize,
    LSQFakeQuantize,
    LSQPlusFakeQuantize,
    MinMaxObserver,
    fake_quantizers,
    set_fast_path,
)
from qdrop.quantization.functional import draw_keep
from qdrop.quantization.fused import mix

REPO_ROOT = Path(__file__).resolve().parents[3]
ACTIVATION_QUANTIZERS = [FixedFakeQuantize, LSQFakeQuantize, LSQPlusFakeQuantize]
SCALE = 0.125  # a power of two: x = (k + 0.5) * SCALE is exactly halfway between two levels


def _activation(shape, scale: float, quant_min: int, quant_max: int, zero_point: float) -> torch.Tensor:
    """Random values plus exact halfway points, exact clamp bounds and values far outside the range."""
    x = torch.randn(shape) * scale * (quant_max - quant_min) / 3
    flat = x.view(-1)
    count = flat.numel() // 4
    levels = torch.randint(quant_min, quant_max, (count,)).float()
    flat[:count] = (levels + 0.5 - zero_point) * scale  # halfway
    flat[count : count + 8] = (quant_max - zero_point) * scale  # upper bound exactly
    flat[count + 8 : count + 16] = (quant_min - zero_point) * scale  # lower bound exactly
    flat[count + 16 : count + 16 + count // 2] *= 6  # far outside
    return x


def _calibrated(quantizer_cls, x: torch.Tensor, bit: int, symmetric: bool, ch_axis: int, power_of_two: bool):
    quantizer = quantizer_cls(MinMaxObserver, bit=bit, symmetric=symmetric, ch_axis=ch_axis)
    with torch.no_grad():
        quantizer(x[:1] if ch_axis != 0 else x)
    quantizer.disable_observer()
    if power_of_two:
        with torch.no_grad():
            quantizer.scale.fill_(SCALE)
    if isinstance(quantizer, LSQPlusFakeQuantize):
        with torch.no_grad():  # a learnable zero point drifts off the integers; it is rounded when used
            quantizer.zero_point.add_(torch.linspace(-0.3, 0.3, quantizer.zero_point.numel()))
    return quantizer


def _zeros_if_none(grad, like: torch.Tensor) -> torch.Tensor:
    """A gradient that autograd left as None (nothing depends on the tensor) is zero."""
    return torch.zeros_like(like) if grad is None else grad


def _run(quantizer, x: torch.Tensor, fast: bool, seed: int = 7):
    """Forward and backward of a copy of `quantizer` on a copy of `x` with a fixed random upstream gradient."""
    quantizer = copy.deepcopy(quantizer)
    x = x.clone().requires_grad_(True)
    quantizer.fast = fast
    torch.manual_seed(seed)
    out = quantizer(x)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    if out.requires_grad:  # AdaRound's hard weight depends on nothing learnable
        (out * upstream).sum().backward()
    grads = {name: _zeros_if_none(param.grad, param) for name, param in quantizer.named_parameters()}
    return out.detach(), _zeros_if_none(x.grad, x), grads


def _assert_same(quantizer, x):
    out_plain, grad_x_plain, grads_plain = _run(quantizer, x, fast=False)
    out_fast, grad_x_fast, grads_fast = _run(quantizer, x, fast=True)
    assert torch.equal(out_fast, out_plain)
    torch.testing.assert_close(grad_x_fast, grad_x_plain, rtol=1e-6, atol=1e-6)
    assert grads_fast.keys() == grads_plain.keys()
    for name, grad in grads_plain.items():
        # Sums over thousands of terms that partly cancel: compare against their magnitude.
        torch.testing.assert_close(
            grads_fast[name],
            grad,
            rtol=1e-4,
            atol=1e-5 * float(grad.abs().max()) + 1e-7,
            msg=lambda m, name=name: f"{name}: {m}",
        )
    return out_fast, grads_fast


@pytest.mark.parametrize("quantizer_cls", ACTIVATION_QUANTIZERS)
@pytest.mark.parametrize("ch_axis", [-1, 1])
@pytest.mark.parametrize("drop_prob", [1.0, 0.5])
@pytest.mark.parametrize("symmetric", [False, True])
def test_activation_quantizers_match_plain(quantizer_cls, ch_axis, drop_prob, symmetric):
    bit = 4
    quant_min, quant_max = (-8, 7) if symmetric else (0, 15)
    zero_point = 0 if symmetric else 5
    x = _activation((2, 6, 9, 10), SCALE, quant_min, quant_max, zero_point)
    quantizer = _calibrated(quantizer_cls, x, bit, symmetric, ch_axis, power_of_two=False)
    with torch.no_grad():
        if not symmetric and not isinstance(quantizer, LSQPlusFakeQuantize):
            quantizer.zero_point.fill_(zero_point)
        quantizer.scale.fill_(SCALE)
    quantizer.drop_prob = drop_prob
    out, grads = _assert_same(quantizer, x)
    halfway = x.view(-1)[: x.numel() // 4] / SCALE
    assert torch.equal(halfway, halfway.floor() + 0.5)  # the halfway inputs really are halfway
    if drop_prob < 1.0:
        assert torch.equal(out, x) is False and (out == x).any()  # some elements dropped, some quantized
    if quantizer_cls is not FixedFakeQuantize:
        assert float(grads["scale"].abs().sum()) > 0


@pytest.mark.parametrize("quantizer_cls", ACTIVATION_QUANTIZERS)
@pytest.mark.parametrize("ch_axis", [-1, 0])
def test_random_scales_match_plain(quantizer_cls, ch_axis):
    x = torch.randn(5, 4, 7, 7) * 3
    quantizer = _calibrated(quantizer_cls, x, 2, False, ch_axis, power_of_two=False)
    quantizer.drop_prob = 0.7
    _assert_same(quantizer, x)


@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("ch_axis", [-1, 0])
@pytest.mark.parametrize("drop_prob", [1.0, 0.5])
@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (300, 512, 1, 1)])  # one block of rows, and two
def test_adaround_matches_plain(soft, ch_axis, drop_prob, shape):
    weight = torch.randn(shape)
    quantizer = AdaRoundFakeQuantize(MinMaxObserver, bit=2, ch_axis=ch_axis)
    with torch.no_grad():
        quantizer(weight)
    quantizer.disable_observer()
    quantizer.init(weight)
    with torch.no_grad():  # push some alphas into the clamped tails of the rectified sigmoid
        quantizer.alpha.view(-1)[:20] = torch.linspace(-12, 12, 20)
    quantizer.soft_targets = soft
    quantizer.drop_prob = drop_prob
    _, grads = _assert_same(quantizer, weight)
    if soft:
        assert float(grads["alpha"].abs().sum()) > 0
    else:
        assert float(grads["alpha"].abs().sum()) == 0


def test_no_grad_forward_matches_plain():
    x = torch.randn(2, 3, 5, 5)
    quantizer = _calibrated(LSQFakeQuantize, x, 4, False, -1, power_of_two=False)
    quantizer.drop_prob = 0.5
    outputs = []
    for fast in (False, True):
        torch.manual_seed(3)
        quantizer.fast = fast
        with torch.no_grad():
            outputs.append(quantizer(x))
    assert torch.equal(outputs[0], outputs[1])


def test_mix_matches_where():
    quantized, full_precision = torch.randn(1000), torch.randn(1000)
    torch.manual_seed(0)
    expected = torch.where(draw_keep(quantized, 0.3), quantized, full_precision)
    torch.manual_seed(0)
    assert torch.equal(mix(quantized, full_precision, 0.3), expected)
    assert mix(quantized, full_precision, 1.0) is quantized


@pytest.mark.parametrize("drop_prob", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_draw_keep_is_bernoulli_of_drop_prob(drop_prob):
    x = torch.empty(1_000_000)
    torch.manual_seed(0)
    keep = draw_keep(x, drop_prob)
    assert keep.dtype == torch.bool and keep.shape == x.shape
    assert abs(keep.float().mean().item() - drop_prob) < 2e-3  # 4 standard deviations at 1e6 draws
    torch.manual_seed(0)
    assert torch.equal(draw_keep(x, drop_prob), keep)
    if drop_prob in (0.0, 1.0):
        assert bool((keep == (drop_prob == 1.0)).all())


def test_draw_keep_masks_are_independent_of_position():
    torch.manual_seed(0)
    keep = draw_keep(torch.empty(1000, 1000), 0.5).float()
    # neighbouring elements and rows are uncorrelated
    assert abs((keep[:, 1:] * keep[:, :-1]).mean().item() - 0.25) < 3e-3
    assert abs((keep[1:] * keep[:-1]).mean().item() - 0.25) < 3e-3


def test_one_switch_from_the_q_config_reaches_every_quantizer():
    """recon.fast sets the path of every quantizer of the wrapped model: calibration, reconstruction and evaluation
    follow it."""
    for fast in (False, True):
        settings = q_config(w_bit=4, a_bit=4)
        settings["recon"]["fast"] = fast
        model = quantize_detector(fused_detector(retinanet_cfg(18)), settings)
        flags = {quantizer.fast for _, quantizer in fake_quantizers(model)}
        assert flags == {fast}
        set_fast_path(model, not fast)
        assert {quantizer.fast for _, quantizer in fake_quantizers(model)} == {not fast}


def test_environment_sets_only_the_default():
    """QDROP_FAST=0 makes the plain path the default of recon.fast and of new quantizers; a q_config that names
    recon.fast still decides."""
    code = (
        "from qdrop.config import QConfig\n"
        "from qdrop.quantization import LSQFakeQuantize, MinMaxObserver\n"
        "import yaml\n"
        "base = yaml.safe_load(open('exp/config.yaml'))\n"
        "print(QConfig.from_mapping(base).recon.fast, LSQFakeQuantize(MinMaxObserver).fast)\n"
        "base['recon']['fast'] = True\n"
        "print(QConfig.from_mapping(base).recon.fast)\n"
    )
    env = dict(os.environ, QDROP_FAST="0")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert result.stdout.split() == ["False", "False", "True"]


@pytest.mark.parametrize("b", [20.0, 7.5, 2.0])
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (300, 512, 1, 1)])  # one block of rows, and two
def test_round_loss_matches_plain(b, shape):
    weight = torch.randn(shape)
    quantizer = AdaRoundFakeQuantize(MinMaxObserver, bit=2, ch_axis=0)
    with torch.no_grad():
        quantizer(weight)
    quantizer.disable_observer()
    quantizer.init(weight)
    with torch.no_grad():  # tails of the rectified sigmoid (h clamped to 0 or 1) and h = 1/2 exactly
        quantizer.alpha.view(-1)[:20] = torch.linspace(-12, 12, 20)
        quantizer.alpha.view(-1)[20] = 0.0
    results = []
    for fast in (False, True):
        q = copy.deepcopy(quantizer)
        q.fast = fast
        loss = q.round_loss(b)
        loss.backward()
        results.append((loss.detach(), q.alpha.grad))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-7)
    assert float(results[1][1].abs().sum()) > 0


@pytest.mark.parametrize("quantizer_cls", [LSQFakeQuantize, LSQPlusFakeQuantize])
def test_quantizer_called_twice_in_one_graph(quantizer_cls):
    """A unit runs a quantizer once per group of same-shaped images in a step; LSQ rewrites its scale in place before
    each call, which must not invalidate what the first call saved for the backward pass."""
    first, second = torch.randn(2, 3, 8, 8), torch.randn(1, 3, 12, 8)
    reference = _calibrated(quantizer_cls, torch.cat([first.flatten(), second.flatten()]), 4, False, -1, False)
    grads = []
    for fast in (False, True):
        quantizer = copy.deepcopy(reference)
        quantizer.fast = fast
        loss = quantizer(first).square().sum() + quantizer(second).square().sum()
        loss.backward()
        grads.append(quantizer.scale.grad.clone())
    torch.testing.assert_close(grads[1], grads[0])

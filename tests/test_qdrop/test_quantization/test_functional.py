"""Fake-quant formulas, straight-through rounding, LSQ / LSQ+ gradients."""

import pytest
import torch

from qdrop.quantization import MinMaxObserver
from qdrop.quantization.functional import (
    fake_quantize,
    fake_quantize_lsq,
    fake_quantize_lsq_plus,
    lsq_grad_factor,
    quant_range,
)


@pytest.mark.parametrize(
    "bit,symmetric,expected", [(4, False, (0, 15)), (4, True, (-8, 7)), (8, False, (0, 255)), (2, True, (-2, 1))]
)
def test_quant_range(bit, symmetric, expected):
    assert quant_range(bit, symmetric) == expected
    observer = MinMaxObserver(bit=bit, symmetric=symmetric)
    assert (observer.quant_min, observer.quant_max) == expected


def test_calculate_qparams_asymmetric_formula():
    observer = MinMaxObserver(bit=4)
    scale, zero_point = observer.calculate_qparams(torch.tensor([-1.0, 0.5, -3.0]), torch.tensor([2.0, 3.0, -1.0]))
    # range always includes 0: [-1, 2] -> 3/15; [0, 3] -> 3/15; [-3, 0] -> 3/15
    torch.testing.assert_close(scale, torch.full((3,), 0.2))
    torch.testing.assert_close(zero_point, torch.tensor([5.0, 0.0, 15.0]))


def test_calculate_qparams_symmetric_formula():
    observer = MinMaxObserver(bit=4, symmetric=True)
    scale, zero_point = observer.calculate_qparams(torch.tensor([-1.0, -4.0]), torch.tensor([3.5, 2.0]))
    torch.testing.assert_close(scale, torch.tensor([3.5 / 7.5, 4.0 / 7.5]))
    assert torch.equal(zero_point, torch.zeros(2))


def test_calculate_qparams_scale_floor_and_zero_point_clamp():
    observer = MinMaxObserver(bit=8)
    scale, zero_point = observer.calculate_qparams(torch.tensor([0.0]), torch.tensor([0.0]))
    assert float(scale) == pytest.approx(1e-8)
    assert float(zero_point) == 0.0


def test_fake_quantize_formula_per_tensor():
    x = torch.tensor([-2.0, -0.26, 0.0, 0.3, 0.74, 10.0])
    s, z = torch.tensor([0.5]), torch.tensor([3.0])
    out = fake_quantize(x, s, z, 0, 15)
    expected = (torch.clamp(torch.round(x / 0.5) + 3, 0, 15) - 3) * 0.5
    torch.testing.assert_close(out, expected)
    assert out.tolist() == [-1.5, -0.5, 0.0, 0.5, 0.5, 6.0]


@pytest.mark.parametrize("ch_axis", [0, 1])
def test_fake_quantize_per_channel(ch_axis):
    x = torch.randn(3, 4, 5)
    n = x.shape[ch_axis]
    s = torch.rand(n) + 0.1
    z = torch.randint(0, 16, (n,)).float()
    out = fake_quantize(x, s, z, 0, 15, ch_axis)
    for c in range(n):
        xc = x.select(ch_axis, c)
        expected = (torch.clamp(torch.round(xc / s[c]) + z[c], 0, 15) - z[c]) * s[c]
        torch.testing.assert_close(out.select(ch_axis, c), expected)


def test_fake_quantize_straight_through_gradient():
    x = torch.tensor([-5.0, -0.3, 0.2, 0.9, 7.0], requires_grad=True)
    fake_quantize(x, torch.tensor([0.25]), torch.tensor([4.0]), 0, 15).sum().backward()
    # inside [(0-4)*0.25, (15-4)*0.25] = [-1, 2.75] the gradient passes; clamped values get none
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def _written_out(x, s, z, qmin, qmax, shape):
    """Reference with an explicit custom gradient: d/ds and d/dz of the LSQ(+) formula."""
    s_b, z_b = s.reshape(shape), z.reshape(shape)
    v = x / s_b
    r = torch.round(v)
    q = torch.clamp(r + z_b, qmin, qmax)
    # torch.clamp passes no gradient at the bounds themselves: a value rounded onto qmin/qmax counts as clamped
    inside = (r + z_b > qmin) & (r + z_b < qmax)
    out = (q - z_b) * s_b
    d_s = torch.where(inside, r - v, q - z_b)  # d out / d s
    d_z = torch.where(inside, torch.zeros_like(x), -s_b)  # d out / d z
    return out, d_s, d_z


@pytest.mark.parametrize("ch_axis", [-1, 0, 1])
def test_lsq_gradients_match_written_out_formula(ch_axis):
    x = torch.randn(4, 6, 3)
    channels = 1 if ch_axis < 0 else x.shape[ch_axis]
    shape = [1] * 3 if ch_axis < 0 else [channels if d == ch_axis else 1 for d in range(3)]
    scale = (torch.rand(channels) * 0.3 + 0.1).requires_grad_()
    zero_point = torch.randint(3, 10, (channels,)).float()
    x_in = x.clone().requires_grad_()
    upstream = torch.randn_like(x)
    out = fake_quantize_lsq(x_in, scale, zero_point, 0, 15, ch_axis)
    (out * upstream).sum().backward()
    ref, d_s, _ = _written_out(x, scale.detach(), zero_point, 0, 15, shape)
    torch.testing.assert_close(out, ref)
    factor = 1.0 / ((x.numel() / channels) * 15) ** 0.5
    assert lsq_grad_factor(x, 15, ch_axis) == pytest.approx(factor)
    dims = [d for d in range(3) if d != ch_axis] if ch_axis >= 0 else list(range(3))
    expected_s = (upstream * d_s).sum(dim=dims).reshape(-1) * factor
    torch.testing.assert_close(scale.grad, expected_s)
    level = torch.round(x / scale.detach().reshape(shape)) + zero_point.reshape(shape)
    torch.testing.assert_close(x_in.grad, upstream * ((level > 0) & (level < 15)))


def test_lsq_plus_gradients_match_written_out_formula():
    x = torch.randn(5, 7) * 2
    scale = torch.tensor([0.3], requires_grad=True)
    zero_point = torch.tensor([6.4], requires_grad=True)  # rounded to 6 in the forward pass
    upstream = torch.randn_like(x)
    out = fake_quantize_lsq_plus(x, scale, zero_point, 0, 15)
    (out * upstream).sum().backward()
    ref, d_s, d_z = _written_out(x, scale.detach(), torch.tensor([6.0]), 0, 15, [1, 1])
    torch.testing.assert_close(out, ref)
    factor = 1.0 / (x.numel() * 15) ** 0.5
    torch.testing.assert_close(scale.grad, (upstream * d_s).sum().reshape(1) * factor)
    torch.testing.assert_close(zero_point.grad, (upstream * d_z).sum().reshape(1) * factor)

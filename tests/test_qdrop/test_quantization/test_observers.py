"""Observers: accumulation over batches, degenerate inputs, state_dict round trips, MSE search exactness."""

import pytest
import torch
from scipy.optimize import minimize_scalar

from plain_search import plain_grid_search
from qdrop.quantization import (
    AvgMinMaxObserver,
    AvgMSEFastObserver,
    AvgMSEObserver,
    MinMaxObserver,
    MSEFastObserver,
    MSEObserver,
)
from qdrop.quantization.observers.grid_search import grid_candidates
from qdrop.quantization.observers.mse_objective import lp_error
from qdrop.quantization.observers.scalar_search import ExactObjective, golden_search

ALL_OBSERVERS = [MinMaxObserver, AvgMinMaxObserver, MSEObserver, AvgMSEObserver, MSEFastObserver, AvgMSEFastObserver]


def test_minmax_running_extremes_over_batches():
    observer = MinMaxObserver(bit=8)
    for batch in (torch.tensor([-1.0, 2.0]), torch.tensor([-3.0, 1.0]), torch.tensor([0.5, 4.0])):
        observer(batch)
    assert float(observer.min_val) == -3.0 and float(observer.max_val) == 4.0


def test_avg_minmax_averages_batches_per_channel():
    observer = AvgMinMaxObserver(bit=8, ch_axis=1)
    a = torch.tensor([[-1.0, 2.0], [1.0, 4.0]])  # channel 0: [-1, 1], channel 1: [2, 4]
    b = torch.tensor([[-3.0, 0.0], [3.0, 6.0]])  # channel 0: [-3, 3], channel 1: [0, 6]
    observer(a)
    observer(b)
    torch.testing.assert_close(observer.min_val, torch.tensor([-2.0, 1.0]))
    torch.testing.assert_close(observer.max_val, torch.tensor([2.0, 5.0]))


def test_per_channel_axis0_shape():
    observer = MinMaxObserver(bit=4, ch_axis=0)
    w = torch.randn(5, 3, 2, 2)
    observer(w)
    torch.testing.assert_close(observer.min_val, w.flatten(1).amin(1))
    scale, zero_point = observer.calculate_qparams(observer.min_val, observer.max_val)
    assert scale.shape == (5,) and zero_point.shape == (5,)


@pytest.mark.parametrize("observer_cls", [MSEObserver, MSEFastObserver])
def test_mse_accumulates_like_minmax_and_avg_averages(observer_cls):
    batches = [torch.randn(200) * (i + 1) for i in range(3)]
    running, averaged = (
        observer_cls(bit=4),
        {MSEObserver: AvgMSEObserver, MSEFastObserver: AvgMSEFastObserver}[observer_cls](bit=4),
    )
    singles = []
    for batch in batches:
        running(batch)
        averaged(batch)
        single = observer_cls(bit=4)
        single(batch)
        singles.append((float(single.min_val), float(single.max_val)))
    assert float(running.min_val) == pytest.approx(min(s[0] for s in singles))
    assert float(running.max_val) == pytest.approx(max(s[1] for s in singles))
    assert float(averaged.min_val) == pytest.approx(sum(s[0] for s in singles) / 3, rel=1e-6)
    assert float(averaged.max_val) == pytest.approx(sum(s[1] for s in singles) / 3, rel=1e-6)


@pytest.mark.parametrize("observer_cls", ALL_OBSERVERS)
@pytest.mark.parametrize(
    "values",
    [torch.zeros(64), torch.full((64,), 0.7), torch.full((64,), -2.0), torch.rand(64) * 1e-7, torch.rand(64) + 1.0],
    ids=["zeros", "constant", "negative-constant", "tiny-range", "one-sided"],
)
@pytest.mark.parametrize("symmetric", [False, True])
def test_degenerate_inputs_give_finite_qparams(observer_cls, values, symmetric):
    observer = observer_cls(bit=4, symmetric=symmetric)
    observer(values)
    observer(values)
    scale, zero_point = observer.calculate_qparams(observer.min_val, observer.max_val)
    assert torch.isfinite(scale).all() and (scale >= 1e-8).all()
    assert torch.isfinite(zero_point).all()
    assert observer.quant_min <= float(zero_point) <= observer.quant_max


@pytest.mark.parametrize("observer_cls", ALL_OBSERVERS)
def test_state_dict_round_trip_per_channel(observer_cls):
    observer = observer_cls(bit=4, ch_axis=0)
    observer(torch.randn(6, 40))
    fresh = observer_cls(bit=4, ch_axis=0)
    fresh.load_state_dict(observer.state_dict())
    assert fresh.min_val.shape == (6,)
    assert torch.equal(fresh.min_val, observer.min_val) and torch.equal(fresh.max_val, observer.max_val)


def _data(kind: str, per_channel: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(len(kind) + per_channel)
    x = torch.randn(6 if per_channel else 1, 800, generator=g) * torch.rand(6 if per_channel else 1, 1, generator=g)
    if kind == "one-sided":
        x = x.abs()
    elif kind == "skewed":
        x = torch.where(x > 0, x * 3, x)
    return x


@pytest.mark.parametrize("kind", ["one-sided", "two-sided", "skewed"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_grid_observer_never_worse_than_plain_loop(kind, per_channel, symmetric):
    x = _data(kind, per_channel)
    observer = MSEObserver(bit=3, symmetric=symmetric, ch_axis=0 if per_channel else -1)
    observer(x)
    rows = x
    two_sided = observer.one_side_dist == "no" and not symmetric
    cand_min, cand_max = grid_candidates(
        rows, observer.quant_min, observer.quant_max, two_sided, observer.one_side_dist
    )
    ref_min, ref_max = plain_grid_search(
        rows, cand_min, cand_max, observer.calculate_qparams, observer.quant_min, observer.quant_max
    )

    def error(lo, hi):
        s, z = observer.calculate_qparams(lo.reshape(-1), hi.reshape(-1))
        return lp_error(rows, s, z, observer.quant_min, observer.quant_max)

    ours, plain = error(observer.min_val, observer.max_val), error(ref_min, ref_max)
    assert (ours <= plain * (1 + 1e-6)).all()
    torch.testing.assert_close(observer.min_val.reshape(-1), ref_min)
    torch.testing.assert_close(observer.max_val.reshape(-1), ref_max)


@pytest.mark.parametrize("kind", ["one-sided", "skewed"])
def test_mse_grid_on_large_tensor_matches_plain_loop(kind):
    """Large groups take the histogram route (>= 65536 values)."""
    x = _data(kind, False).repeat(1, 90) + torch.linspace(0, 1e-3, 72000).unsqueeze(0)
    observer = MSEObserver(bit=2)
    observer(x)
    two_sided = observer.one_side_dist == "no"
    cand_min, cand_max = grid_candidates(x, 0, 3, two_sided, observer.one_side_dist)
    ref_min, ref_max = plain_grid_search(x, cand_min, cand_max, observer.calculate_qparams, 0, 3)
    torch.testing.assert_close(observer.min_val.reshape(-1), ref_min)
    torch.testing.assert_close(observer.max_val.reshape(-1), ref_max)


@pytest.mark.parametrize("kind", ["one-sided", "two-sided", "skewed"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_fast_observer_matches_plain_golden_search(kind, symmetric):
    x = _data(kind, False) * 3
    observer = MSEFastObserver(bit=4, symmetric=symmetric)
    observer(x)
    plain = ExactObjective(x, observer.calculate_qparams, observer.quant_min, observer.quant_max)
    two_sided = observer.one_side_dist == "no" and not symmetric
    ref = golden_search(
        plain,
        0,
        float(x.min()),
        float(x.max()),
        two_sided,
        observer.one_side_dist,
        observer.quant_min,
        observer.quant_max,
    )
    assert float(observer.min_val) == pytest.approx(ref[0], rel=1e-6, abs=1e-7)
    assert float(observer.max_val) == pytest.approx(ref[1], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("bit", [2, 6])
def test_mse_grid_per_channel_with_degenerate_channels(bit):
    w = torch.randn(5, 3, 3, 3)
    w[1] = 0.0
    w[2] = 0.7
    w[3] = torch.linspace(-1e-9, 1e-9, 27).view(3, 3, 3)
    observer = MSEObserver(bit=bit, ch_axis=0)
    observer(w)
    rows = w.flatten(1)
    cand_min, cand_max = grid_candidates(rows, observer.quant_min, observer.quant_max, True, "no")
    ref_min, ref_max = plain_grid_search(
        rows, cand_min, cand_max, observer.calculate_qparams, observer.quant_min, observer.quant_max
    )
    torch.testing.assert_close(observer.min_val, ref_min)
    torch.testing.assert_close(observer.max_val, ref_max)
    scale, _ = observer.calculate_qparams(observer.min_val, observer.max_val)
    assert torch.isfinite(scale).all()


@pytest.mark.parametrize("bit", [2, 4, 8])
def test_mse_grid_per_channel_weights_match_plain_loop(bit):
    """Conv weights per output channel, two-sided: the bounds of every range and zero point prune, the pick stays
    the plain loop's."""
    g = torch.Generator().manual_seed(bit)
    w = torch.randn(16, 24, 3, 3, generator=g) * torch.rand(16, 1, 1, 1, generator=g) * 0.05
    w[3] = torch.where(w[3] > 0, w[3] * 4, w[3])  # one skewed channel
    observer = MSEObserver(bit=bit, ch_axis=0)
    observer(w)
    rows = w.flatten(1)
    cand_min, cand_max = grid_candidates(rows, observer.quant_min, observer.quant_max, True, "no")
    ref_min, ref_max = plain_grid_search(
        rows, cand_min, cand_max, observer.calculate_qparams, observer.quant_min, observer.quant_max
    )
    assert torch.equal(observer.min_val, ref_min) and torch.equal(observer.max_val, ref_max)


def _brent_search(observer, x: torch.Tensor):
    """A bounded Brent search (scipy) of the fast observers' function: the range in [1/100, 1] of the extent,
    each range scored by a bounded Brent search of the zero-point shift, which is searched again at the end."""
    quant_min, quant_max = observer.quant_min, observer.quant_max
    rows = x.reshape(1, -1)

    def error(new_min: float, new_max: float) -> float:
        scale, zero_point = observer.calculate_qparams(
            torch.tensor([new_min], dtype=x.dtype), torch.tensor([new_max], dtype=x.dtype)
        )
        return float(lp_error(rows, scale, zero_point, quant_min, quant_max))

    extent = max(float(x.max()), 0.0) - min(float(x.min()), 0.0)

    def shift_search(span: float):
        delta = span / (quant_max - quant_min)
        return minimize_scalar(
            lambda shift: error(-shift, span - shift), method="bounded", bounds=(quant_min * delta, quant_max * delta)
        )

    span = minimize_scalar(lambda span: shift_search(span).fun, method="bounded", bounds=(extent / 100, extent)).x
    shift = shift_search(span).x
    return error(-shift, span - shift)


@pytest.mark.parametrize("seed", range(6))
def test_mse_fast_observer_never_worse_than_bounded_brent(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20000, generator=g)
    x = torch.where(x > 0, x * (0.5 + torch.rand(1, generator=g)), x * torch.rand(1, generator=g) * 0.8)  # two-sided
    observer = MSEFastObserver(bit=2 if seed % 2 else 4)
    observer(x)
    scale, zero_point = observer.calculate_qparams(observer.min_val.reshape(1), observer.max_val.reshape(1))
    ours = float(lp_error(x.reshape(1, -1), scale, zero_point, observer.quant_min, observer.quant_max))
    assert ours <= _brent_search(observer, x) * (1 + 1e-5)


def test_mse_search_prefers_clipping_for_heavy_tails():
    x = torch.randn(4000)
    x[0] = 8.0  # one outlier: the best 4-bit range clips it
    observer = MSEObserver(bit=4)
    observer(x)
    assert float(observer.max_val) < 6.0


@pytest.mark.parametrize("observer_cls", [MinMaxObserver, MSEObserver])
def test_observer_follows_module_dtype(observer_cls):
    observer = observer_cls(bit=4).double()
    observer(torch.randn(100))
    assert observer.min_val.dtype == torch.float64

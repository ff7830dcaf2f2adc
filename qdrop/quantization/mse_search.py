"""Exact-result fast searches for the MSE observers.

The objective of a candidate quantizer (scale ``s``, zero point ``z``) on a group of values (a tensor, or one
channel) is ``mean |q(x) - x| ** p`` with ``q(x) = (clamp(round(x / s) + z, qmin, qmax) - z) * s``.

Speed comes from bounding the objective instead of evaluating it. A candidate whose lower bound exceeds another
candidate's upper bound can never be the minimiser; the few that remain are evaluated exactly on every value,
with the same function the plain search uses, so the pick is the plain search's pick (ties go to the earlier
candidate, as in a loop that keeps the first strict improvement). Two kinds of bounds:

* histograms (large groups, and every one-sided or symmetric grid): count, mean, smallest and largest value of
  every bin at several resolutions. In a bin within one rounding cell ``|q(x) - x| ** p`` is convex in ``x``:
  Jensen's inequality (at the bin mean) and the chord through the bin's extremes bound the bin's total.
* range by range (small groups, two-sided grids): one pass over the sorted values per range serves all its zero
  points (exact inside the clamping window, convexity bounds per unit cell outside), and cheap per-range lower
  bounds (clipping of the extreme values; power-mean bound of the rounding error) skip most ranges.

``grid_search`` serves the 100-range grid (x zero points for two-sided data); ``golden_search`` the bounded
scalar minimisation. Golden-section search only compares objective values, so comparing bounds (refined lazily,
down to an exact evaluation when they overlap) reproduces the plain search's path exactly.
"""
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LP_NORM = 2.4
NUM_RANGES = 100
# Relative slack between bounds (over summaries of the values) and exact float32 evaluations.
_RTOL = 1e-5


def _absolute_slack(x2d: Tensor) -> Tensor:
    """Per row: float rounding near a grid level leaves errors of a few ulps; their p-th powers stay far below
    (1e-6 * max|x|)^p."""
    return (1e-6 * x2d.abs().amax(dim=1).to(torch.float64)).pow(LP_NORM)
_MAX_CHUNK = 1 << 21  # elements per temporary while evaluating many candidates at once
_COARSEST_BINS = 16
_BIN_FACTOR = 4
_SMALL_GROUP_VALUES = 1 << 16  # smaller groups bound two-sided grids range by range, larger ones by histograms

QParamsFn = Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]]


def lp_error(x2d: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int) -> Tensor:
    """Exact objective of one candidate per row: ``x2d`` (G, n), ``scale``/``zero_point`` (G,); float64 (G,)."""
    s = scale.reshape(-1, 1).to(x2d.dtype)
    z = zero_point.reshape(-1, 1).to(x2d.dtype)
    x_q = (torch.clamp(torch.round(x2d / s) + z, quant_min, quant_max) - z) * s
    return (x_q - x2d).abs().pow(LP_NORM).sum(dim=1, dtype=torch.float64) / x2d.shape[1]


def grid_candidates(x2d: Tensor, quant_min: int, quant_max: int, two_sided: bool,
                    one_side: str) -> Tuple[Tensor, Tensor]:
    """Candidate ranges (G, C) of the published grid search, in its loop order.

    Two-sided data: for i in 1..100 the range spans i/100 of the data's extent and every integer zero point is
    tried. Otherwise: i/100 of the largest magnitude, on the data's side(s) only.
    """
    x_min, x_max = x2d.amin(dim=1), x2d.amax(dim=1)
    steps = torch.arange(1, NUM_RANGES + 1, device=x2d.device, dtype=x2d.dtype)
    if two_sided:
        x_min = torch.minimum(x_min, torch.zeros_like(x_min))
        x_max = torch.maximum(x_max, torch.zeros_like(x_max))
        extent = (x_max - x_min).unsqueeze(1) / NUM_RANGES * steps  # (G, 100)
        delta = extent / float(quant_max - quant_min)
        zps = torch.arange(quant_min, quant_max + 1, device=x2d.device, dtype=x2d.dtype)
        cand_min = -(zps.view(1, 1, -1) * delta.unsqueeze(2))
        cand_max = extent.unsqueeze(2) - zps.view(1, 1, -1) * delta.unsqueeze(2)
        return cand_min.flatten(1), cand_max.flatten(1)
    magnitude = torch.maximum(x_min.abs(), x_max).unsqueeze(1) / NUM_RANGES * steps
    zeros = torch.zeros_like(magnitude)
    cand_min = zeros if one_side == 'pos' else -magnitude
    cand_max = zeros if one_side == 'neg' else magnitude
    return cand_min, cand_max


class BinnedGroups:
    """Histogram summaries of every row of ``x2d`` at resolutions 16, 64, ... down to about 32 values per bin
    (a finer bin costs more to bound than evaluating its values exactly)."""

    def __init__(self, x2d: Tensor, max_bins: int = 1 << 20):
        groups, n = x2d.shape
        finest = _COARSEST_BINS
        while finest * _BIN_FACTOR <= min(max_bins, n // 32):
            finest *= _BIN_FACTOR
        lo = x2d.amin(dim=1, keepdim=True)
        width = x2d.amax(dim=1, keepdim=True) - lo
        per_bin = torch.where(width > 0, finest / width, torch.zeros_like(width))
        index = ((x2d - lo) * per_bin).long().clamp_(0, finest - 1)
        index += torch.arange(groups, device=x2d.device).unsqueeze(1) * finest
        index = index.flatten()
        values = x2d.flatten()
        count = torch.bincount(index, minlength=groups * finest).to(torch.float64)
        total = torch.bincount(index, weights=values.to(torch.float64), minlength=groups * finest)
        smallest = torch.full((groups * finest,), math.inf, dtype=x2d.dtype, device=x2d.device)
        smallest.scatter_reduce_(0, index, values, reduce='amin')
        largest = torch.full_like(smallest, -math.inf)
        largest.scatter_reduce_(0, index, values, reduce='amax')
        count, total = count.view(groups, finest), total.view(groups, finest)
        smallest, largest = smallest.view(groups, finest), largest.view(groups, finest)
        self.levels: List[Tuple[Tensor, Tensor, Tensor, Tensor]] = []
        while True:
            self.levels.append(self._summary(count, total, smallest, largest))
            bins = count.shape[1]
            if bins <= _COARSEST_BINS:
                break
            shape = (groups, bins // _BIN_FACTOR, _BIN_FACTOR)
            count, total = count.view(shape).sum(2), total.view(shape).sum(2)
            smallest, largest = smallest.view(shape).amin(2), largest.view(shape).amax(2)
        self.levels.reverse()  # coarsest first
        self.num_values = n

    @staticmethod
    def _summary(count: Tensor, total: Tensor, smallest: Tensor, largest: Tensor):
        """(count, mean, smallest, largest) in the values' dtype; empty bins hold zeros."""
        filled = count > 0
        mean = torch.where(filled, total / count.clamp_min(1), torch.zeros_like(total)).to(smallest.dtype)
        return (count.to(smallest.dtype), mean, torch.where(filled, smallest, mean),
                torch.where(filled, largest, mean))

    def bounds(self, level: int, groups: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int,
               quant_max: int) -> Tuple[Tensor, Tensor]:
        """Lower and upper bounds (float64) of the objective for candidates (``groups[k]``, ``scale[k]``, ...)."""
        count, mean, low, high = (t[groups] for t in self.levels[level])
        # Full-size operands keep the element-wise kernels on their fast contiguous path.
        s = scale.to(low.dtype).unsqueeze(1).expand_as(low).contiguous()
        z = zero_point.to(low.dtype).unsqueeze(1).expand_as(low).contiguous()

        def quantize(v: Tensor) -> Tensor:
            return (torch.clamp(torch.round(v / s) + z, quant_min, quant_max) - z) * s

        q_low, q_high = quantize(low), quantize(high)
        e_low = (low - q_low).abs_().pow_(LP_NORM)
        e_high = (high - q_high).abs_().pow_(LP_NORM)
        one_cell = q_low == q_high
        width = high - low
        chord = ((high - mean) * e_low + (mean - low) * e_high) / width
        chord = torch.where(width > 0, chord, e_low)
        jensen = (mean - q_low).abs_().pow_(LP_NORM)
        # A bin across one rounding boundary but holding no grid level: the error peaks inside, so its minimum is
        # at an end.
        across_one = (q_high - q_low <= s * (1 + 1e-6)) & (low >= q_low) & (high <= q_high)
        lower = torch.where(one_cell, jensen, torch.where(across_one, torch.minimum(e_low, e_high), 0.0))
        widest = torch.maximum((high - q_low).abs_(), (q_high - low).abs_()).pow_(LP_NORM)
        upper = torch.where(one_cell, chord, widest)
        n = self.num_values
        return ((count * lower).sum(1, dtype=torch.float64) / n, (count * upper).sum(1, dtype=torch.float64) / n)


def _chunk_size(columns: int) -> int:
    return max(1, _MAX_CHUNK // max(columns, 1))


def _exact_errors(x2d: Tensor, groups: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int,
                  quant_max: int) -> Tensor:
    errors = []
    step = _chunk_size(x2d.shape[1])
    for start in range(0, groups.numel(), step):
        g = groups[start:start + step]
        rows = x2d[int(g[0]):int(g[0]) + 1] if g.numel() == 1 else x2d[g]
        errors.append(lp_error(rows, scale[start:start + step], zero_point[start:start + step], quant_min, quant_max))
    return torch.cat(errors) if errors else torch.zeros(0, dtype=torch.float64, device=x2d.device)


def _prune(g_idx: Tensor, c_idx: Tensor, lower: Tensor, upper: Tensor, slack: Tensor) -> Tuple[Tensor, Tensor]:
    """Drop candidates whose lower bound exceeds the least upper bound of their group (``slack``: per group)."""
    best_upper = torch.full(slack.shape, math.inf, dtype=torch.float64, device=g_idx.device)
    best_upper.scatter_reduce_(0, g_idx, upper, reduce='amin')
    keep = lower <= best_upper[g_idx] * (1 + _RTOL) + slack[g_idx]
    return g_idx[keep], c_idx[keep]


def _tail_bounds(count: Tensor, mean: Tensor, low: Tensor, high: Tensor, level: Tensor,
                 below: bool) -> Tuple[Tensor, Tensor]:
    """Bounds of sum (level - t)_+^p (``below``) or (t - level)_+^p over cells (count, mean, low, high) of sorted
    values: the function is convex in t, so Jensen (at the cell mean) and the chord bound each cell."""
    sign = 1.0 if below else -1.0
    f_low = (sign * (level - low)).clamp_min(0).pow(LP_NORM)
    f_high = (sign * (level - high)).clamp_min(0).pow(LP_NORM)
    jensen = (sign * (level - mean)).clamp_min(0).pow(LP_NORM)
    width = high - low
    chord = torch.where(width > 0, ((high - mean) * f_low + (mean - low) * f_high) / width.clamp_min(1e-30), f_low)
    return (count * jensen).sum(-1, dtype=torch.float64), (count * chord).sum(-1, dtype=torch.float64)


def _range_bounds(x_sorted: Tensor, x_cumsum: Tensor, scale: Tensor, quant_min: int,
                  quant_max: int) -> Tuple[Tensor, Tensor]:
    """Bounds (rows, zero points) of the objective for one range of a two-sided grid: one pass over the values
    serves every zero point.

    In units of the range's scale (t = x / s), zero point z keeps [L, U] = [qmin - z, qmax - z]: values inside
    cost |t - round(t)|^p (exact, from a cumulative sum over the sorted values), values outside cost their
    distance to L or U to the power p (bounded per unit cell of t by convexity). The candidates of one range
    share its scale up to float rounding, which the slack _RTOL covers. ``x_cumsum`` is the float64 cumulative sum
    of the sorted values with a leading 0.
    """
    n = x_sorted.shape[1]
    s = scale.unsqueeze(1)
    t = x_sorted / s
    inside_cost = torch.cumsum(F.pad((t - torch.round(t)).abs().pow(LP_NORM), (1, 0)), dim=1, dtype=torch.float64)
    first, last = math.floor(float(t[:, 0].min())), math.ceil(float(t[:, -1].max()))
    edges = torch.arange(first, last + 1, dtype=t.dtype, device=t.device)
    at = torch.searchsorted(t, edges.expand(t.shape[0], -1).contiguous())  # first value >= each edge
    count = (at[:, 1:] - at[:, :-1]).to(t.dtype)
    total = (x_cumsum.gather(1, at[:, 1:]) - x_cumsum.gather(1, at[:, :-1])) / s.to(torch.float64)
    filled = count > 0
    mean = torch.where(filled, (total / count.clamp_min(1)).to(t.dtype), edges[:-1])
    low = torch.where(filled, t.gather(1, at[:, :-1].clamp_max(n - 1)), mean)
    high = torch.where(filled, t.gather(1, (at[:, 1:] - 1).clamp_min(0)), mean)
    zero_points = torch.arange(quant_min, quant_max + 1, dtype=t.dtype, device=t.device)
    lo_level = (quant_min - zero_points).expand(t.shape[0], -1).contiguous()
    hi_level = (quant_max - zero_points).expand(t.shape[0], -1).contiguous()
    inside = (inside_cost.gather(1, torch.searchsorted(t, hi_level, side='right'))
              - inside_cost.gather(1, torch.searchsorted(t, lo_level, side='left')))
    # L <= 0 <= U for every zero point, so lower tails lie in cells left of 0 and upper tails right of it.
    split = max(0, min(-first, edges.numel() - 1))
    cell = edges[:-1].view(1, 1, -1)
    below, above = cell[..., :split] + 1 <= lo_level.unsqueeze(2), cell[..., split:] >= hi_level.unsqueeze(2)
    tail_lower, tail_upper = [], []
    step = _chunk_size(lo_level.shape[1] * count.shape[1])
    for start in range(0, t.shape[0], step):
        rows = slice(start, start + step)
        stats = [v[rows].unsqueeze(1) for v in (count, mean, low, high)]
        left = [v[..., :split] for v in stats]
        right = [v[..., split:] for v in stats]
        low_lb, low_ub = _tail_bounds(left[0] * below[rows], *left[1:], lo_level[rows].unsqueeze(2), True)
        high_lb, high_ub = _tail_bounds(right[0] * above[rows], *right[1:], hi_level[rows].unsqueeze(2), False)
        tail_lower.append(low_lb + high_lb)
        tail_upper.append(low_ub + high_ub)
    scale_p = s.to(torch.float64) ** LP_NORM / n
    return ((inside + torch.cat(tail_lower)) * scale_p * (1 - _RTOL),
            (inside + torch.cat(tail_upper)) * scale_p * (1 + _RTOL))


def _clipping_lower_bound(x_sorted: Tensor, width: Tensor, pairs: int = 256) -> Tensor:
    """A lower bound of the objective of any window of ``width`` (per row): the i-th smallest and i-th largest
    values lie at least (their gap - width) outside it together, and t^p is convex."""
    k = min(pairs, x_sorted.shape[1] // 2)
    gap = x_sorted[:, x_sorted.shape[1] - k:].flip(1) - x_sorted[:, :k]
    excess = (gap - width.unsqueeze(1)).clamp_min(0) / 2
    return 2 * excess.pow(LP_NORM).sum(1, dtype=torch.float64) / x_sorted.shape[1] * (1 - _RTOL)


def _cheap_range_lower_bound(x_sorted: Tensor, x_cumsum: Tensor, x2_cumsum: Tensor, scale: Tensor,
                             quant_min: int, quant_max: int) -> Tensor:
    """A lower bound (per row) of the objective of every zero point of a range, from cumulative sums only.

    In units of the scale (t = x / s) the values fall into rounding cells [m - 1/2, m + 1/2). For zero point z a
    cell inside [L, U] = [qmin - z, qmax - z] costs |t - m|^p per value, at least (mean of (t - m)^2)^(p/2)
    (power means, p >= 2); the cells below L cost (L - t)^p, bounded from their count and first two moments
    (Jensen, power means), and likewise above U.
    """
    s = scale.to(torch.float64).unsqueeze(1)
    t_first = float((x_sorted[:, 0:1] / scale.unsqueeze(1)).min())
    t_last = float((x_sorted[:, -1:] / scale.unsqueeze(1)).max())
    centres = torch.arange(math.floor(t_first) - 1, math.ceil(t_last) + 2, dtype=torch.float64,
                           device=x_sorted.device)
    edges = ((centres - 0.5).unsqueeze(0) * s).to(x_sorted.dtype)
    at = torch.searchsorted(x_sorted, edges.contiguous())
    count = (at[:, 1:] - at[:, :-1]).to(torch.float64)
    sum_t = (x_cumsum.gather(1, at[:, 1:]) - x_cumsum.gather(1, at[:, :-1])) / s
    sum_t2 = (x2_cumsum.gather(1, at[:, 1:]) - x2_cumsum.gather(1, at[:, :-1])) / s ** 2
    m = centres[:-1].unsqueeze(0)
    second = ((sum_t2 - 2 * m * sum_t + count * m ** 2) / count.clamp_min(1)).clamp_min(0)
    pad = (1, 0)
    inside_cum = torch.cumsum(F.pad(count * second.pow(LP_NORM / 2), pad), dim=1)
    count_cum, sum_cum = torch.cumsum(F.pad(count, pad), dim=1), torch.cumsum(F.pad(sum_t, pad), dim=1)
    sum2_cum = torch.cumsum(F.pad(sum_t2, pad), dim=1)
    zero_points = torch.arange(quant_min, quant_max + 1, dtype=torch.float64, device=x_sorted.device)
    # Index of the cell centred at level v is v - centres[0]; cells [lo, hi] inclusive are inside.
    lo = ((quant_min - zero_points) - centres[0]).long().clamp(0, count.shape[1]).expand(count.shape[0], -1)
    hi = ((quant_max - zero_points) - centres[0] + 1).long().clamp(0, count.shape[1]).expand(count.shape[0], -1)
    inside = inside_cum.gather(1, hi) - inside_cum.gather(1, lo)
    level_lo, level_hi = (quant_min - zero_points).unsqueeze(0), (quant_max - zero_points).unsqueeze(0)

    def tail(n: Tensor, first: Tensor, second: Tensor, level: Tensor) -> Tensor:
        # sum |t - level|^p over n values of the given sums: Jensen on |t - level| and power means on (t - level)^2
        mean = first / n.clamp_min(1)
        square = ((second - 2 * level * first) / n.clamp_min(1) + level ** 2).clamp_min(0)
        return n * torch.maximum((mean - level).abs().pow(LP_NORM), square.pow(LP_NORM / 2))

    below = tail(count_cum.gather(1, lo), sum_cum.gather(1, lo), sum2_cum.gather(1, lo), level_lo)
    above = tail(count_cum[:, -1:] - count_cum.gather(1, hi), sum_cum[:, -1:] - sum_cum.gather(1, hi),
                 sum2_cum[:, -1:] - sum2_cum.gather(1, hi), level_hi)
    bound = (inside + below + above).amin(1) * s.squeeze(1) ** LP_NORM / x_sorted.shape[1]
    # A value within float rounding of a cell edge costs about 0.5^p in either cell; the slack covers the rest.
    return bound * (1 - _RTOL)


def _grid_bounds_by_range(x2d: Tensor, scale: Tensor, zero_point: Tensor, per_range: int, quant_min: int,
                          quant_max: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bounds of the two-sided grid candidates that can still win. Cheap per-range lower bounds (clipping of the
    extreme values, rounding spread per cell) order the ranges and rule most of them out; the others get one
    full pass each, most promising first."""
    groups, candidates = scale.shape
    num_ranges = candidates // per_range
    x_sorted = torch.sort(x2d, dim=1).values
    x64 = F.pad(x_sorted, (1, 0)).to(torch.float64)
    x_cumsum, x2_cumsum = torch.cumsum(x64, dim=1), torch.cumsum(x64 * x64, dim=1)
    slack = _absolute_slack(x2d)
    cheap = torch.stack([_cheap_range_lower_bound(x_sorted, x_cumsum, x2_cumsum, scale[:, r * per_range],
                                                  quant_min, quant_max)
                         for r in range(num_ranges)])  # (ranges, rows)
    best_upper = torch.full((groups,), math.inf, dtype=torch.float64, device=x2d.device)
    found = []
    # The bound is close to the objective: visiting likely winners first tightens the upper bounds early.
    for r in torch.argsort(cheap.mean(1), stable=True).tolist():
        rows = (cheap[r] <= best_upper * (1 + _RTOL) + slack).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        column = r * per_range
        every = rows.numel() == groups
        lower, upper = _range_bounds(x_sorted if every else x_sorted[rows], x_cumsum if every else x_cumsum[rows],
                                     scale[rows, column], quant_min, quant_max)
        columns = torch.arange(column, column + per_range, device=x2d.device)
        slot = zero_point[rows][:, columns].long() - quant_min
        lower, upper = lower.gather(1, slot), upper.gather(1, slot)
        best_upper[rows] = torch.minimum(best_upper[rows], upper.min(1).values)
        found.append((rows.repeat_interleave(per_range), columns.repeat(rows.numel()), lower.flatten(),
                      upper.flatten()))
    return tuple(torch.cat(parts) for parts in zip(*found))


def grid_search(x2d: Tensor, cand_min: Tensor, cand_max: Tensor, calculate_qparams: QParamsFn,
                quant_min: int, quant_max: int, per_range: int = 1) -> Tuple[Tensor, Tensor]:
    """The per-row candidate (from ``cand_min``/``cand_max``, (G, C)) of least objective, as (min, max) (G,).

    ``per_range`` > 1 says consecutive blocks of that many candidates share a range (the zero points of a
    two-sided grid); small groups then use one pass per range instead of histograms.
    """
    groups, candidates = cand_min.shape
    scale, zero_point = calculate_qparams(cand_min, cand_max)
    scale, zero_point = scale.expand(groups, candidates), zero_point.expand(groups, candidates)
    slack = _absolute_slack(x2d)
    if per_range > 1 and x2d.shape[1] < _SMALL_GROUP_VALUES:
        g_idx, c_idx, lower, upper = _grid_bounds_by_range(x2d, scale, zero_point, per_range, quant_min, quant_max)
        g_idx, c_idx = _prune(g_idx, c_idx, lower, upper, slack)
    else:
        binned = BinnedGroups(x2d)
        g_idx = torch.arange(groups, device=x2d.device).repeat_interleave(candidates)
        c_idx = torch.arange(candidates, device=x2d.device).repeat(groups)
        for level in range(len(binned.levels)):
            step = _chunk_size(binned.levels[level][0].shape[1] * 12)
            lower, upper = [], []
            for start in range(0, g_idx.numel(), step):
                g, c = g_idx[start:start + step], c_idx[start:start + step]
                lo, hi = binned.bounds(level, g, scale[g, c], zero_point[g, c], quant_min, quant_max)
                lower.append(lo)
                upper.append(hi)
            g_idx, c_idx = _prune(g_idx, c_idx, torch.cat(lower), torch.cat(upper), slack)
    errors = _exact_errors(x2d, g_idx, scale[g_idx, c_idx], zero_point[g_idx, c_idx], quant_min, quant_max)
    # Per group: least error, then earliest candidate.
    order = torch.argsort(c_idx, stable=True)
    g_idx, c_idx, errors = g_idx[order], c_idx[order], errors[order]
    order = torch.argsort(errors, stable=True)
    g_idx, c_idx = g_idx[order], c_idx[order]
    order = torch.argsort(g_idx, stable=True)
    g_idx, c_idx = g_idx[order], c_idx[order]
    first = torch.ones_like(g_idx, dtype=torch.bool)
    first[1:] = g_idx[1:] != g_idx[:-1]
    best = torch.empty(groups, dtype=torch.long, device=x2d.device)
    best[g_idx[first]] = c_idx[first]
    rows = torch.arange(groups, device=x2d.device)
    return cand_min[rows, best], cand_max[rows, best]


def plain_grid_search(x2d: Tensor, cand_min: Tensor, cand_max: Tensor, calculate_qparams: QParamsFn,
                      quant_min: int, quant_max: int, columns: Optional[range] = None) -> Tuple[Tensor, Tensor]:
    """Reference: loop over the candidates, evaluate each on every value, keep the first strict improvement.

    ``columns`` restricts the loop to some candidates (benchmarks time a subset of a very slow loop).
    """
    best_score = torch.full((x2d.shape[0],), 1e10, dtype=torch.float64, device=x2d.device)
    best_min, best_max = x2d.amin(dim=1), x2d.amax(dim=1)
    for column in columns if columns is not None else range(cand_min.shape[1]):
        new_min, new_max = cand_min[:, column], cand_max[:, column]
        scale, zero_point = calculate_qparams(new_min, new_max)
        score = lp_error(x2d, scale.expand_as(new_min), zero_point.expand_as(new_min), quant_min, quant_max)
        better = score < best_score
        best_min = torch.where(better, new_min, best_min)
        best_max = torch.where(better, new_max, best_max)
        best_score = torch.minimum(best_score, score)
    return best_min, best_max


# ----------------------------------------------------------------------------------------------------------
# Bounded scalar minimisation (golden-section search over the range, and over the zero-point shift)

_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


class Probe:
    """One evaluated candidate: its range (``qrange``) and the objective state shared by equal quantizers."""

    __slots__ = ('qrange', 'state')

    def __init__(self, qrange: Tuple[float, float], state: list):
        self.qrange = qrange
        self.state = state  # [lower bound, upper bound, resolution level, candidate]


class ExactObjective:
    """Plain evaluation: every probe evaluates the objective on all values of its group."""

    def __init__(self, x2d: Tensor, calculate_qparams: QParamsFn, quant_min: int, quant_max: int):
        self.x2d, self.qparams, self.quant_min, self.quant_max = x2d, calculate_qparams, quant_min, quant_max
        self.evaluations = 0

    def _candidate(self, new_min: float, new_max: float):
        ref = self.x2d.new_tensor([new_min, new_max])
        scale, zero_point = self.qparams(ref[:1], ref[1:])
        return scale, zero_point

    def probe(self, group: int, new_min: float, new_max: float) -> Probe:
        scale, zero_point = self._candidate(new_min, new_max)
        self.evaluations += 1
        value = float(lp_error(self.x2d[group:group + 1], scale, zero_point, self.quant_min, self.quant_max))
        return Probe((new_min, new_max), [value, value, None, None])

    def less(self, a: Probe, b: Probe) -> bool:
        return a.state[0] < b.state[0]


class BoundedObjective(ExactObjective):
    """Same comparisons as :class:`ExactObjective`, decided from histogram bounds where they suffice."""

    def __init__(self, x2d: Tensor, calculate_qparams: QParamsFn, quant_min: int, quant_max: int):
        super().__init__(x2d, calculate_qparams, quant_min, quant_max)
        self.binned = BinnedGroups(x2d)
        self.slack = _absolute_slack(x2d).tolist()
        self._states: Dict[tuple, list] = {}

    def probe(self, group: int, new_min: float, new_max: float) -> Probe:
        scale, zero_point = self._candidate(new_min, new_max)
        key = (group, float(scale), float(zero_point))
        state = self._states.get(key)
        if state is None:
            state = [0.0, math.inf, -1, (group, scale, zero_point)]
            self._refine(state)
            self._states[key] = state
        return Probe((new_min, new_max), state)

    def _refine(self, state: list) -> None:
        """Next finer histogram bound; after the finest, the exact value (level ``len(levels)``)."""
        group, scale, zero_point = state[3]
        level = state[2] + 1
        if level < len(self.binned.levels):
            groups = torch.tensor([group], device=self.x2d.device)
            lo, hi = self.binned.bounds(level, groups, scale, zero_point, self.quant_min, self.quant_max)
            slack = self.slack[group]
            state[0], state[1] = float(lo) * (1 - _RTOL) - slack, float(hi) * (1 + _RTOL) + slack
        else:
            self.evaluations += 1
            state[0] = state[1] = float(lp_error(self.x2d[group:group + 1], scale, zero_point,
                                                 self.quant_min, self.quant_max))
        state[2] = level

    def less(self, a: Probe, b: Probe) -> bool:
        sa, sb = a.state, b.state
        if sa is sb:
            return False
        exact = len(self.binned.levels)
        while True:
            a_exact, b_exact = sa[2] == exact, sb[2] == exact
            if a_exact and b_exact:
                return sa[0] < sb[0]
            if sa[1] < sb[0]:
                return True
            if sa[0] > sb[1]:
                return False
            if a_exact or (not b_exact and sb[1] - sb[0] > sa[1] - sa[0]):
                self._refine(sb)
            else:
                self._refine(sa)


def _golden(value_at: Callable[[float], Probe], lo: float, hi: float, iterations: int,
            less: Callable[[Probe, Probe], bool]) -> Probe:
    c, d = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
    fc, fd = value_at(c), value_at(d)
    for _ in range(iterations):
        if less(fc, fd):
            hi, d, fd = d, c, fc
            c = hi - _INV_PHI * (hi - lo)
            fc = value_at(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + _INV_PHI * (hi - lo)
            fd = value_at(d)
    return fc if less(fc, fd) else fd


def golden_search(objective: ExactObjective, group: int, x_min: float, x_max: float, two_sided: bool,
                  one_side: str, quant_min: int, quant_max: int, range_iterations: int = 12) -> Tuple[float, float]:
    """Golden-section search over the range in [1/100, 1] of the data's extent; for two-sided data each range is
    scored by a nested golden-section search over the zero-point shift. Returns the best (min, max)."""
    levels = quant_max - quant_min
    shift_iterations = math.ceil(math.log(2.0 * (levels + 1)) / -math.log(_INV_PHI))
    if two_sided:
        extent = max(x_max, 0.0) - min(x_min, 0.0)

        def range_value(span: float) -> Probe:
            delta = span / levels

            def shift_value(shift: float) -> Probe:
                # The quantizer only sees the shift through its integer zero point: snap to it, so shifts with
                # the same zero point are one candidate rather than float-rounding variants of it.
                zero_point = min(max(round(shift / delta), quant_min), quant_max)
                return objective.probe(group, -zero_point * delta, span - zero_point * delta)
            return _golden(shift_value, quant_min * delta, quant_max * delta, shift_iterations, objective.less)
    else:
        extent = max(abs(x_min), x_max)

        def range_value(span: float) -> Probe:
            return objective.probe(group, 0.0 if one_side == 'pos' else -span, 0.0 if one_side == 'neg' else span)
    best = _golden(range_value, extent / NUM_RANGES, extent, range_iterations, objective.less)
    return best.qrange

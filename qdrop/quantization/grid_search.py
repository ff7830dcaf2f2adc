"""Grid search of the MSE observers: the candidate of least objective among a grid of 100 ranges (times every
zero point for two-sided data), found exactly but without evaluating most candidates.

Candidates are pruned by bounds of the objective (see ``mse_objective``); the few that remain are evaluated
exactly on every value, with the function the plain loop uses, so the pick is the plain loop's pick (ties go to the
earlier candidate, as in a loop that keeps the first strict improvement). Two kinds of bounds:

* histograms (large groups, and every one-sided or symmetric grid): ``BinnedGroups``;
* range by range (small groups, two-sided grids): one pass over the sorted values per range serves all its zero
  points (exact inside the clamping window, convexity bounds per unit cell outside), and a cheap per-range lower
  bound from cumulative sums (power means of the rounding error and of the clipping error) skips most ranges.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .mse_objective import LP_NORM, NUM_RANGES, RTOL, BinnedGroups, QParamsFn, absolute_slack, lp_error

_MAX_CHUNK = 1 << 21  # elements per temporary while evaluating many candidates at once
_SMALL_GROUP_VALUES = 1 << 16  # smaller groups bound two-sided grids range by range, larger ones by histograms


def grid_candidates(x2d: Tensor, quant_min: int, quant_max: int, two_sided: bool,
                    one_side: str) -> Tuple[Tensor, Tensor]:
    """Candidate ranges of the grid search, in the order a plain loop visits them.

    Two-sided data: for i in 1..100 the range spans i/100 of the data's extent and every integer zero point is
    tried. Otherwise: i/100 of the largest magnitude, on the data's side(s) only.

    Args:
        x2d: the values, (G, n): one group per row.
        quant_min, quant_max: the integer grid.
        two_sided: search the zero point too (asymmetric grid, values of both signs).
        one_side: 'pos', 'neg' or 'no': the sign of the values, for a one-sided grid.

    Returns:
        (cand_min, cand_max), each (G, C): C = 100 * (quant_max - quant_min + 1) for two-sided data, else 100.
    """
    x_min, x_max = x2d.amin(dim=1), x2d.amax(dim=1)
    steps = torch.arange(1, NUM_RANGES + 1, device=x2d.device, dtype=x2d.dtype)
    if two_sided:
        x_min = torch.minimum(x_min, torch.zeros_like(x_min))
        x_max = torch.maximum(x_max, torch.zeros_like(x_max))
        extent = (x_max - x_min).unsqueeze(1) / NUM_RANGES * steps  # (G, 100)
        delta = extent / float(quant_max - quant_min)
        zps = torch.arange(quant_min, quant_max + 1, device=x2d.device, dtype=x2d.dtype)
        cand_min = -(zps.view(1, 1, -1) * delta.unsqueeze(2))  # (G, 100, zero points)
        cand_max = extent.unsqueeze(2) - zps.view(1, 1, -1) * delta.unsqueeze(2)
        return cand_min.flatten(1), cand_max.flatten(1)  # (G, 100 * zero points), range-major
    magnitude = torch.maximum(x_min.abs(), x_max).unsqueeze(1) / NUM_RANGES * steps  # (G, 100)
    zeros = torch.zeros_like(magnitude)
    cand_min = zeros if one_side == 'pos' else -magnitude
    cand_max = zeros if one_side == 'neg' else magnitude
    return cand_min, cand_max


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
    keep = lower <= best_upper[g_idx] * (1 + RTOL) + slack[g_idx]
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
    share its scale up to float rounding, which the slack RTOL covers. ``x_cumsum`` is the float64 cumulative sum
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
    return ((inside + torch.cat(tail_lower)) * scale_p * (1 - RTOL),
            (inside + torch.cat(tail_upper)) * scale_p * (1 + RTOL))


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
    return bound * (1 - RTOL)


def _grid_bounds_by_range(x2d: Tensor, scale: Tensor, zero_point: Tensor, per_range: int, quant_min: int,
                          quant_max: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bounds of the two-sided grid candidates that can still win. Cheap per-range lower bounds
    (``_cheap_range_lower_bound``) order the ranges and rule most of them out; the others get one full pass each,
    most promising first."""
    groups, candidates = scale.shape
    num_ranges = candidates // per_range
    x_sorted = torch.sort(x2d, dim=1).values
    x64 = F.pad(x_sorted, (1, 0)).to(torch.float64)
    x_cumsum, x2_cumsum = torch.cumsum(x64, dim=1), torch.cumsum(x64 * x64, dim=1)
    slack = absolute_slack(x2d)
    cheap = torch.stack([_cheap_range_lower_bound(x_sorted, x_cumsum, x2_cumsum, scale[:, r * per_range],
                                                  quant_min, quant_max)
                         for r in range(num_ranges)])  # (ranges, rows)
    best_upper = torch.full((groups,), math.inf, dtype=torch.float64, device=x2d.device)
    found = []
    # The bound is close to the objective: visiting likely winners first tightens the upper bounds early.
    for r in torch.argsort(cheap.mean(1), stable=True).tolist():
        rows = (cheap[r] <= best_upper * (1 + RTOL) + slack).nonzero().squeeze(1)
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
    """The candidate of least objective per row, exactly as a loop that keeps the first strict improvement.

    Args:
        x2d: the values, (G, n): one group per row.
        cand_min, cand_max: the candidate ranges, (G, C), in loop order.
        calculate_qparams: (min, max) -> (scale, zero_point) of the observer.
        quant_min, quant_max: the integer grid.
        per_range: > 1 says consecutive blocks of that many candidates share a range (the zero points of a
            two-sided grid); small groups then use one pass per range instead of histograms.

    Returns:
        (min, max) of the chosen candidate per row, each (G,).
    """
    groups, candidates = cand_min.shape
    scale, zero_point = calculate_qparams(cand_min, cand_max)
    scale, zero_point = scale.expand(groups, candidates), zero_point.expand(groups, candidates)
    slack = absolute_slack(x2d)
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

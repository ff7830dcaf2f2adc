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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .mse_objective import LP_NORM, NUM_RANGES, RTOL, BinnedGroups, QParamsFn, absolute_slack, lp_error

_MAX_CHUNK = 1 << 21  # elements per temporary while evaluating many candidates at once
_FINER_SUBCELLS = (4,)  # sub-cells per rounding cell of the later bounding stages (a finer third stage costs more)
_SMALL_GROUP_VALUES = 1 << 16  # smaller groups bound two-sided grids range by range, larger ones by histograms


def grid_candidates(
    x2d: Tensor, quant_min: int, quant_max: int, two_sided: bool, one_side: str
) -> tuple[Tensor, Tensor]:
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
    cand_min = zeros if one_side == "pos" else -magnitude
    cand_max = zeros if one_side == "neg" else magnitude
    return cand_min, cand_max


def _chunk_size(columns: int) -> int:
    return max(1, _MAX_CHUNK // max(columns, 1))


def _exact_errors(
    x2d: Tensor, groups: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int
) -> Tensor:
    errors = []
    step = _chunk_size(x2d.shape[1])
    for start in range(0, groups.numel(), step):
        g = groups[start : start + step]
        rows = x2d[int(g[0]) : int(g[0]) + 1] if g.numel() == 1 else x2d[g]
        errors.append(
            lp_error(rows, scale[start : start + step], zero_point[start : start + step], quant_min, quant_max)
        )
    return torch.cat(errors) if errors else torch.zeros(0, dtype=torch.float64, device=x2d.device)


def _prune(g_idx: Tensor, c_idx: Tensor, lower: Tensor, upper: Tensor, slack: Tensor) -> tuple[Tensor, Tensor]:
    """Drop candidates whose lower bound exceeds the least upper bound of their group (``slack``: per group)."""
    best_upper = torch.full(slack.shape, math.inf, dtype=torch.float64, device=g_idx.device)
    best_upper.scatter_reduce_(0, g_idx, upper, reduce="amin")
    keep = lower <= best_upper[g_idx] * (1 + RTOL) + slack[g_idx]
    return g_idx[keep], c_idx[keep]


def _sorted_rows(x2d: Tensor) -> Tensor:
    """``x2d`` sorted along dim 1; on the CPU by numpy, whose row sort is many times faster than torch's."""
    if x2d.device.type == "cpu":
        return torch.from_numpy(np.sort(x2d.detach().numpy(), axis=1))
    return torch.sort(x2d, dim=1).values


class _SortedRows:
    """Sorted values of every group with cumulative sums of the values and of their squares (float64, each row
    with a leading 0), for counts and moments of any interval from two searches."""

    def __init__(self, x2d: Tensor):
        self.values = _sorted_rows(x2d).to(torch.float64)  # (G, n)
        zeros = self.values.new_zeros(x2d.shape[0], 1)
        self.sum1 = torch.cat([zeros, torch.cumsum(self.values, dim=1)], dim=1)  # (G, n + 1)
        self.sum2 = torch.cat([zeros, torch.cumsum(self.values * self.values, dim=1)], dim=1)

    def rows(self, start: int, stop: int) -> "_SortedRows":
        """The same summaries for the groups start:stop (views)."""
        picked = _SortedRows.__new__(_SortedRows)
        picked.values, picked.sum1, picked.sum2 = (t[start:stop] for t in (self.values, self.sum1, self.sum2))
        return picked


def _power_mean_cost(count: Tensor, first: Tensor, second: Tensor, level: Tensor) -> Tensor:
    """Lower bound of sum |t - level|^p over values of the given count, sum and sum of squares:
    count * (mean of (t - level)^2)^(p/2) (power means, p >= 2; exact for a single value)."""
    square = ((second - 2 * level * first) / count.clamp_min(1) + level * level).clamp_min(0)
    return count * square.pow(LP_NORM / 2)


def _window_moments(rows: _SortedRows, scale: Tensor, levels: int, sub: int) -> tuple[Tensor, Tensor, Tensor]:
    """Count, sum and sum of squares of t = x / s over the groups of values that decide the objective of every
    zero point of a range: the values below t = -levels - 1/2, ``sub`` sub-cells of each rounding cell centred in
    [-levels, levels] (where every zero point's window lies), and the values above.

    Args:
        rows: summaries of P groups.
        scale: (P, R): R ranges per group, float64.
        levels: quant_max - quant_min.
        sub: sub-cells per rounding cell.

    Returns:
        Three float64 (P, R, (2 * levels + 1) * sub + 2).
    """
    groups, n = rows.values.shape
    num_ranges = scale.shape[1]
    edges_t = torch.arange((2 * levels + 1) * sub + 1, dtype=torch.float64, device=scale.device) / sub - levels - 0.5
    s = scale.unsqueeze(2)  # (P, R, 1)
    at = torch.searchsorted(rows.values, (edges_t * s).view(groups, -1)).view(groups, num_ranges, -1)
    lo = torch.cat([torch.zeros_like(at[..., :1]), at], dim=2).flatten(1)  # (P, R * groups of values)
    hi = torch.cat([at, torch.full_like(at[..., :1], n)], dim=2).flatten(1)

    def between(cumulative: Tensor) -> Tensor:
        return (cumulative.gather(1, hi) - cumulative.gather(1, lo)).view(groups, num_ranges, -1)

    count = (hi - lo).to(torch.float64).view(groups, num_ranges, -1)
    return count, between(rows.sum1) / s, between(rows.sum2) / (s * s)


def _group_levels(levels: int, sub: int, device: torch.device) -> Tensor:
    """The rounding level of each group of :func:`_window_moments` before clamping: -inf, the cell centres, inf."""
    centres = torch.arange(-levels, levels + 1, dtype=torch.float64, device=device).repeat_interleave(sub)
    return F.pad(F.pad(centres, (1, 0), value=-math.inf), (0, 1), value=math.inf)


def _lumped_bounds(count: Tensor, first: Tensor, second: Tensor, levels: int, sub: int) -> Tensor:
    """Lower bounds (before the factor s^p / n) per zero point from group moments (P, R, groups): groups inside
    the window land on their centre, and each clamped side is bounded as one group. Returns (P, R, levels + 1),
    slot k for zero point quant_min + k."""
    inside = _power_mean_cost(
        count[..., 1:-1], first[..., 1:-1], second[..., 1:-1], _group_levels(levels, sub, count.device)[1:-1]
    )
    cumulative = [torch.cumsum(F.pad(v, (1, 0)), dim=2) for v in (inside, count, first, second)]
    slots = torch.arange(levels + 1, device=count.device)
    # Slot k keeps [L, U] = [-k, levels - k]: the groups from 1 + (levels - k) * sub to 1 + (2 * levels - k + 1) * sub.
    low, high = 1 + (levels - slots) * sub, 1 + (2 * levels + 1 - slots) * sub
    inside_total = cumulative[0][..., high - 1] - cumulative[0][..., low - 1]
    below = _power_mean_cost(*(c[..., low] for c in cumulative[1:]), -slots.to(torch.float64))
    above = _power_mean_cost(*(c[..., -1:] - c[..., high] for c in cumulative[1:]), (levels - slots).to(torch.float64))
    return inside_total + below + above


def _split_bounds(count: Tensor, first: Tensor, second: Tensor, slot: Tensor, levels: int, sub: int) -> Tensor:
    """Lower bounds (before the factor s^p / n) of single candidates from group moments (T, groups), every group
    landing on its own clamped level for zero point slot ``slot`` (T,). Returns (T,)."""
    low, high = -slot.to(torch.float64).unsqueeze(1), (levels - slot).to(torch.float64).unsqueeze(1)
    level = torch.minimum(torch.maximum(_group_levels(levels, sub, count.device), low), high)  # (T, groups)
    return _power_mean_cost(count, first, second, level).sum(1)


def _two_sided_candidates(
    x2d: Tensor, scale: Tensor, zero_point: Tensor, per_range: int, quant_min: int, quant_max: int, slack: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The candidates of a two-sided grid that can still win: flat group and candidate indices, their lower
    bounds, and the exact objective of one candidate per group (an upper bound of the group's least).

    In units of a range's scale (t = x / s), zero point z keeps [L, U] = [qmin - z, qmax - z], a value in the
    rounding cell centred at m lands on clamp(m, L, U), and a group of values landing on one level l costs at
    least count * (mean of (t - l)^2)^(p/2) (power means). Every range is bounded from one group per rounding
    cell, the ranges that can still win from four sub-cells per cell, and their candidates that can still win
    with the clamped values bounded sub-cell by sub-cell too. A candidate survives while its bound does not exceed
    the least exact objective of its group's most promising candidates so far. The candidates of one range share
    its scale up to float rounding, which RTOL covers; a candidate whose zero point differs from its slot's by
    float rounding reads its own zero point's bound.
    """
    groups, n = x2d.shape
    levels = quant_max - quant_min
    num_ranges = scale.shape[1] // per_range
    sorted_rows = _SortedRows(x2d)
    range_scale = scale[:, ::per_range].to(torch.float64)  # (G, R)
    slot = (zero_point.long() - quant_min).view(groups, num_ranges, per_range)
    all_rows = torch.arange(groups, device=x2d.device)
    best = torch.full((groups,), math.inf, dtype=torch.float64, device=x2d.device)
    order = torch.arange(num_ranges, device=x2d.device).expand(groups, -1)  # (G, W): the open ranges
    is_open = torch.ones_like(order, dtype=torch.bool)
    cells = 2 * levels + 1
    # Sub-cells per rounding cell: finer bounds for fewer ranges; finer than one value per sub-cell gains nothing.
    for cell_split in (1, *(max(1, min(finer, n // cells)) for finer in _FINER_SUBCELLS)):
        scales = range_scale.gather(1, order)  # (G, W)
        step = max(1, _MAX_CHUNK // (scales.shape[1] * (cells * cell_split + 2)))
        moments = [
            _window_moments(sorted_rows.rows(start, start + step), scales[start : start + step], levels, cell_split)
            for start in range(0, groups, step)
        ]
        moments = [torch.cat(parts) for parts in zip(*moments)]  # each (G, W, groups of values)
        factor = scales.pow(LP_NORM).unsqueeze(2) / n * (1 - RTOL)
        lower = _lumped_bounds(*moments, levels, cell_split) * factor  # (G, W, K)
        slots = slot.gather(1, order.unsqueeze(2).expand(-1, -1, per_range))
        lower = lower.gather(2, slots).masked_fill(~is_open.unsqueeze(2), math.inf)
        if cell_split > 1:
            # Candidates that survive the lumped bound: bound their clamped values sub-cell by sub-cell too.
            g_idx, pos, zero_slot = (lower <= (best * (1 + RTOL) + slack).view(groups, 1, 1)).nonzero(as_tuple=True)
            split = _split_bounds(*(m[g_idx, pos] for m in moments), slots[g_idx, pos, zero_slot], levels, cell_split)
            lower = torch.full_like(lower, math.inf).index_put_((g_idx, pos, zero_slot), split * factor[g_idx, pos, 0])
        likely = lower.flatten(1).argmin(1)
        likely = order[all_rows, likely // per_range] * per_range + likely % per_range
        best = torch.minimum(
            best, lp_error(x2d, scale[all_rows, likely], zero_point[all_rows, likely], quant_min, quant_max)
        )
        keep = lower <= (best * (1 + RTOL) + slack).view(groups, 1, 1)
        # The ranges still open in each group first, in range order; groups with fewer repeat closed ones.
        still_open = keep.any(2)
        position = torch.argsort((~still_open).to(torch.int8), dim=1, stable=True)[:, : int(still_open.sum(1).max())]
        order, is_open = order.gather(1, position), still_open.gather(1, position)
        position = position.unsqueeze(2).expand(-1, -1, per_range)
        lower, keep = lower.gather(1, position), keep.gather(1, position)
    g_idx, pos, zero_slot = keep.nonzero(as_tuple=True)
    return g_idx, order[g_idx, pos] * per_range + zero_slot, lower[g_idx, pos, zero_slot], best


def _evaluate_in_rounds(
    x2d: Tensor,
    g_idx: Tensor,
    c_idx: Tensor,
    lower: Tensor,
    best: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    quant_min: int,
    quant_max: int,
    slack: Tensor,
    per_round: int = 2,
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact objectives of the candidates that can still win, most promising first: each round evaluates the next
    ``per_round`` candidates of every group by lower bound, and the least objective found so far rules out the
    candidates whose bound exceeds it.

    Returns:
        (groups, candidates, objectives) of the evaluated candidates, flat.
    """
    order = torch.argsort(lower, stable=True)
    order = order[torch.argsort(g_idx[order], stable=True)]  # by group, then by bound
    g_idx, c_idx, lower = g_idx[order], c_idx[order], lower[order]
    position = torch.arange(g_idx.numel(), device=x2d.device)
    group_start = torch.zeros_like(best, dtype=torch.long).scatter_reduce_(
        0, g_idx, position, reduce="amin", include_self=False
    )
    rank = position - group_start[g_idx]
    best = best.clone()
    done_g, done_c, done_e = [], [], []
    for first in range(0, int(rank.max()) + 1 if rank.numel() else 0, per_round):
        pending = (rank >= first) & (lower <= best[g_idx] * (1 + RTOL) + slack[g_idx])
        if not bool(pending.any()):
            break
        pick = pending & (rank < first + per_round)
        if not bool(pick.any()):
            continue
        g, c = g_idx[pick], c_idx[pick]
        errors = _exact_errors(x2d, g, scale[g, c], zero_point[g, c], quant_min, quant_max)
        best.scatter_reduce_(0, g, errors, reduce="amin")
        done_g.append(g)
        done_c.append(c)
        done_e.append(errors)
    return torch.cat(done_g), torch.cat(done_c), torch.cat(done_e)


def grid_search(
    x2d: Tensor,
    cand_min: Tensor,
    cand_max: Tensor,
    calculate_qparams: QParamsFn,
    quant_min: int,
    quant_max: int,
    per_range: int = 1,
) -> tuple[Tensor, Tensor]:
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
        g_idx, c_idx, lower, best = _two_sided_candidates(
            x2d, scale, zero_point, per_range, quant_min, quant_max, slack
        )
        g_idx, c_idx, errors = _evaluate_in_rounds(
            x2d, g_idx, c_idx, lower, best, scale, zero_point, quant_min, quant_max, slack
        )
    else:
        binned = BinnedGroups(x2d)
        g_idx = torch.arange(groups, device=x2d.device).repeat_interleave(candidates)
        c_idx = torch.arange(candidates, device=x2d.device).repeat(groups)
        for level in range(len(binned.levels)):
            step = _chunk_size(binned.levels[level][0].shape[1] * 12)
            lower, upper = [], []
            for start in range(0, g_idx.numel(), step):
                g, c = g_idx[start : start + step], c_idx[start : start + step]
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

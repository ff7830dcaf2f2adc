"""Bounded scalar minimisation of the MSE observers: golden-section search over the range, nested with one over
the zero-point shift for two-sided data.

Golden-section search only compares objective values, so comparing bounds (refined lazily, from the coarsest
histogram down to an exact evaluation when they overlap) reproduces the path of a search that evaluates every
probe exactly.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .mse_objective import NUM_RANGES, RTOL, BinnedGroups, QParamsFn, absolute_slack, lp_error

_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0
SCAN_POINTS = 12
RANGE_ITERATIONS = 12
_DIRECT_VALUES = 1 << 18  # candidates times values below which evaluating beats bounding
EXACT = 1 << 30  # the level of an exactly evaluated objective, finer than every histogram


@dataclass(eq=False)
class ObjectiveBounds:
    """What is known of one candidate's objective: ``lower <= objective <= upper``, refined in place and shared by
    every probe of the same candidate."""

    lower: float
    upper: float
    level: Optional[int] = None  # index of the histogram resolution of the bounds; EXACT once exact
    group: int = 0  # the candidate: row of the values, and its quantization parameters
    scale: Optional[Tensor] = None
    zero_point: Optional[Tensor] = None


class Probe:
    """One probed candidate: its range (``qrange``) and the bounds of its objective."""

    __slots__ = ("qrange", "bounds")

    def __init__(self, qrange: tuple[float, float], bounds: ObjectiveBounds):
        self.qrange = qrange
        self.bounds = bounds


def _first_least(probes: list[Probe]) -> Probe:
    """The first of exactly evaluated probes of least objective."""
    return min(probes, key=lambda probe: probe.bounds.lower)


class ExactObjective:
    """Plain evaluation: every probe evaluates the objective on all values of its group.

    Args:
        x2d: the values, (G, n): one group per row.
        calculate_qparams: (min, max) -> (scale, zero_point) of the observer.
        quant_min, quant_max: the integer grid.
    """

    def __init__(self, x2d: Tensor, calculate_qparams: QParamsFn, quant_min: int, quant_max: int):
        self.x2d, self.qparams, self.quant_min, self.quant_max = x2d, calculate_qparams, quant_min, quant_max
        self.evaluations = 0

    def _candidate(self, new_min: float, new_max: float) -> tuple[Tensor, Tensor]:
        ref = self.x2d.new_tensor([new_min, new_max])
        scale, zero_point = self.qparams(ref[:1], ref[1:])
        return scale, zero_point

    def probe(self, group: int, new_min: float, new_max: float) -> Probe:
        """The candidate range [new_min, new_max] on row ``group``."""
        scale, zero_point = self._candidate(new_min, new_max)
        self.evaluations += 1
        value = float(lp_error(self.x2d[group : group + 1], scale, zero_point, self.quant_min, self.quant_max))
        return Probe((new_min, new_max), ObjectiveBounds(value, value))

    def less(self, a: Probe, b: Probe) -> bool:
        """Whether ``a``'s objective is smaller than ``b``'s."""
        return a.bounds.lower < b.bounds.lower

    def _exact_probe(self, group: int, qrange: tuple[float, float], scale: Tensor, zero_point: Tensor) -> Probe:
        self.evaluations += 1
        value = float(lp_error(self.x2d[group : group + 1], scale, zero_point, self.quant_min, self.quant_max))
        return Probe(qrange, ObjectiveBounds(value, value, None, group, scale, zero_point))

    def least(self, group: int, ranges: list[tuple[float, float]]) -> Probe:
        """The first of the candidate ranges of least objective on row ``group``."""
        mins, maxs = self.x2d.new_tensor(ranges).unbind(1)
        scale, zero_point = self.qparams(mins, maxs)
        return _first_least(
            [self._exact_probe(group, ranges[k], scale[k : k + 1], zero_point[k : k + 1]) for k in range(len(ranges))]
        )


class BoundedObjective(ExactObjective):
    """Same comparisons as :class:`ExactObjective`, decided from histogram bounds where they suffice."""

    def __init__(self, x2d: Tensor, calculate_qparams: QParamsFn, quant_min: int, quant_max: int):
        super().__init__(x2d, calculate_qparams, quant_min, quant_max)
        self._binned: Optional[BinnedGroups] = None
        self.slack = absolute_slack(x2d).tolist()
        self._known: dict[tuple[int, float, float], ObjectiveBounds] = {}

    @property
    def binned(self) -> BinnedGroups:
        """The histograms of the values, built on first use (small groups are evaluated, never bounded)."""
        if self._binned is None:
            self._binned = BinnedGroups(self.x2d)
        return self._binned

    def probe(self, group: int, new_min: float, new_max: float) -> Probe:
        scale, zero_point = self._candidate(new_min, new_max)
        key = (group, float(scale), float(zero_point))
        bounds = self._known.get(key)
        if bounds is None:
            bounds = ObjectiveBounds(0.0, math.inf, -1, group, scale, zero_point)
            self._refine(bounds)
            self._known[key] = bounds
        return Probe((new_min, new_max), bounds)

    def least(self, group: int, ranges: list[tuple[float, float]]) -> Probe:
        """Same pick as :meth:`ExactObjective.least`; histogram bounds of all candidates at once rule most of them
        out before the exact evaluations."""
        mins, maxs = self.x2d.new_tensor(ranges).unbind(1)
        scale, zero_point = self.qparams(mins, maxs)
        if self.x2d.shape[1] * len(ranges) <= _DIRECT_VALUES:
            # Small groups: every candidate evaluated at once costs less than bounding them.
            self.evaluations += len(ranges)
            rows = self.x2d[group : group + 1].expand(len(ranges), -1)
            values = lp_error(rows, scale, zero_point, self.quant_min, self.quant_max).tolist()
            return _first_least(
                [
                    Probe(ranges[k], ObjectiveBounds(v, v, EXACT, group, scale[k : k + 1], zero_point[k : k + 1]))
                    for k, v in enumerate(values)
                ]
            )
        candidates = [
            ObjectiveBounds(0.0, math.inf, -1, group, scale[k : k + 1], zero_point[k : k + 1])
            for k in range(len(ranges))
        ]
        # Histogram bounds of all candidates together, level by level, while they rule candidates out.
        alive = list(range(len(ranges)))
        for level in range(len(self.binned.levels)):
            index = torch.tensor(alive, device=self.x2d.device)
            lower, upper = self.binned.bounds(
                level, torch.full_like(index, group), scale[index], zero_point[index], self.quant_min, self.quant_max
            )
            for k, lo, hi in zip(alive, lower.tolist(), upper.tolist()):
                self._set_histogram_bounds(candidates[k], level, lo, hi)
            least_upper = min(candidates[k].upper for k in alive)
            alive = [k for k in alive if candidates[k].lower <= least_upper]
            if len(alive) == 1:
                break
        # Refine lazily until the least lower bound belongs to a candidate known to be the first least.
        while True:
            order = sorted(alive, key=lambda k: (candidates[k].lower, k))
            first = candidates[order[0]]
            rivals = [candidates[k] for k in order[1:] if candidates[k].lower <= first.upper]
            unsettled = [b for b in [first, *rivals] if b.level != EXACT]
            if not rivals or not unsettled:
                # No rival can be smaller; exact rivals that tie come later in the order.
                return Probe(ranges[order[0]], first)
            self._refine(max(unsettled, key=lambda b: b.upper - b.lower))

    def _set_histogram_bounds(self, bounds: ObjectiveBounds, level: int, lower: float, upper: float) -> None:
        """Histogram bounds of level ``level``, widened by the slack between summaries and exact evaluations."""
        slack = self.slack[bounds.group]
        bounds.lower, bounds.upper, bounds.level = lower * (1 - RTOL) - slack, upper * (1 + RTOL) + slack, level

    def _refine(self, bounds: ObjectiveBounds) -> None:
        """Next finer histogram bound; after the finest, or at once for a group small enough to evaluate, the exact
        value (level EXACT)."""
        level = bounds.level + 1
        if self.x2d.shape[1] > _DIRECT_VALUES and level < len(self.binned.levels):
            groups = torch.tensor([bounds.group], device=self.x2d.device)
            lo, hi = self.binned.bounds(level, groups, bounds.scale, bounds.zero_point, self.quant_min, self.quant_max)
            self._set_histogram_bounds(bounds, level, float(lo), float(hi))
            return
        self.evaluations += 1
        rows = self.x2d[bounds.group : bounds.group + 1]
        value = float(lp_error(rows, bounds.scale, bounds.zero_point, self.quant_min, self.quant_max))
        bounds.lower, bounds.upper, bounds.level = value, value, EXACT

    def less(self, a: Probe, b: Probe) -> bool:
        ba, bb = a.bounds, b.bounds
        if ba is bb:
            return False
        while True:
            a_exact, b_exact = ba.level == EXACT, bb.level == EXACT
            if a_exact and b_exact:
                return ba.lower < bb.lower
            if ba.upper < bb.lower:
                return True
            if ba.lower > bb.upper:
                return False
            if a_exact or (not b_exact and bb.upper - bb.lower > ba.upper - ba.lower):
                self._refine(bb)
            else:
                self._refine(ba)


def _golden(
    value_at: Callable[[float], Probe], lo: float, hi: float, iterations: int, less: Callable[[Probe, Probe], bool]
) -> Probe:
    """Golden-section search of [lo, hi]; the best probe it saw."""
    c, d = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
    fc, fd = value_at(c), value_at(d)
    best = fc if less(fc, fd) else fd
    for _ in range(iterations):
        if less(fc, fd):
            hi, d, fd = d, c, fc
            c = hi - _INV_PHI * (hi - lo)
            fc = value_at(c)
            new = fc
        else:
            lo, c, fc = c, d, fd
            d = lo + _INV_PHI * (hi - lo)
            fd = value_at(d)
            new = fd
        if less(new, best):
            best = new
    return best


def golden_search(
    objective: ExactObjective,
    group: int,
    x_min: float,
    x_max: float,
    two_sided: bool,
    one_side: str,
    quant_min: int,
    quant_max: int,
    scan_points: int = SCAN_POINTS,
    range_iterations: int = RANGE_ITERATIONS,
) -> tuple[float, float]:
    """Bounded search of the range in [1/100, 1] of the data's extent: a scan of ``scan_points`` evenly spaced
    ranges finds the basin of the least objective (the objective of the range need not be unimodal), then a
    golden-section search refines inside the scan's neighbours of the best. For two-sided data each range is
    scored by its best zero point (every zero point compared).

    Args:
        objective: evaluates and compares candidates of the rows of its values (exactly, or from bounds).
        group: the row to search.
        x_min, x_max: the row's smallest and largest value.
        two_sided: search the zero point too (asymmetric grid, values of both signs).
        one_side: 'pos', 'neg' or 'no': the sign of the values, for a one-sided search.
        quant_min, quant_max: the integer grid.
        scan_points: ranges of the initial scan.
        range_iterations: golden-section steps of the refinement.

    Returns:
        The best range (min, max) as floats.
    """
    levels = quant_max - quant_min
    if two_sided:
        extent = max(x_max, 0.0) - min(x_min, 0.0)

        def range_value(span: float) -> Probe:
            delta = span / levels
            return objective.least(
                group,
                [(-zero_point * delta, span - zero_point * delta) for zero_point in range(quant_min, quant_max + 1)],
            )
    else:
        extent = max(abs(x_min), x_max)

        def range_value(span: float) -> Probe:
            return objective.probe(group, 0.0 if one_side == "pos" else -span, 0.0 if one_side == "neg" else span)

    low = extent / NUM_RANGES
    step = (extent - low) / (scan_points - 1)
    scan = [range_value(low + k * step) for k in range(scan_points)]
    best = scan[0]
    for probe in scan[1:]:
        if objective.less(probe, best):
            best = probe
    k = scan.index(best)
    refined = _golden(
        range_value,
        low + max(k - 1, 0) * step,
        low + min(k + 1, scan_points - 1) * step,
        range_iterations,
        objective.less,
    )
    return (refined if objective.less(refined, best) else best).qrange

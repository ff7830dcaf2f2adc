"""Bounded scalar minimisation of the MSE observers: golden-section search over the range, nested with one over
the zero-point shift for two-sided data.

Golden-section search only compares objective values, so comparing bounds (refined lazily, from the coarsest
histogram down to an exact evaluation when they overlap) reproduces the path of a search that evaluates every
probe exactly.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from .mse_objective import NUM_RANGES, RTOL, BinnedGroups, QParamsFn, absolute_slack, lp_error

_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(eq=False)
class ObjectiveBounds:
    """What is known of one candidate's objective: ``lower <= objective <= upper``, refined in place and shared by
    every probe of the same candidate."""

    lower: float
    upper: float
    level: Optional[int] = None  # index of the histogram resolution of the bounds; ``len(levels)`` once exact
    group: int = 0  # the candidate: row of the values, and its quantization parameters
    scale: Optional[Tensor] = None
    zero_point: Optional[Tensor] = None


class Probe:
    """One probed candidate: its range (``qrange``) and the bounds of its objective."""

    __slots__ = ('qrange', 'bounds')

    def __init__(self, qrange: Tuple[float, float], bounds: ObjectiveBounds):
        self.qrange = qrange
        self.bounds = bounds


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

    def _candidate(self, new_min: float, new_max: float) -> Tuple[Tensor, Tensor]:
        ref = self.x2d.new_tensor([new_min, new_max])
        scale, zero_point = self.qparams(ref[:1], ref[1:])
        return scale, zero_point

    def probe(self, group: int, new_min: float, new_max: float) -> Probe:
        """The candidate range [new_min, new_max] on row ``group``."""
        scale, zero_point = self._candidate(new_min, new_max)
        self.evaluations += 1
        value = float(lp_error(self.x2d[group:group + 1], scale, zero_point, self.quant_min, self.quant_max))
        return Probe((new_min, new_max), ObjectiveBounds(value, value))

    def less(self, a: Probe, b: Probe) -> bool:
        """Whether ``a``'s objective is smaller than ``b``'s."""
        return a.bounds.lower < b.bounds.lower


class BoundedObjective(ExactObjective):
    """Same comparisons as :class:`ExactObjective`, decided from histogram bounds where they suffice."""

    def __init__(self, x2d: Tensor, calculate_qparams: QParamsFn, quant_min: int, quant_max: int):
        super().__init__(x2d, calculate_qparams, quant_min, quant_max)
        self.binned = BinnedGroups(x2d)
        self.slack = absolute_slack(x2d).tolist()
        self._known: Dict[Tuple[int, float, float], ObjectiveBounds] = {}

    def probe(self, group: int, new_min: float, new_max: float) -> Probe:
        scale, zero_point = self._candidate(new_min, new_max)
        key = (group, float(scale), float(zero_point))
        bounds = self._known.get(key)
        if bounds is None:
            bounds = ObjectiveBounds(0.0, math.inf, -1, group, scale, zero_point)
            self._refine(bounds)
            self._known[key] = bounds
        return Probe((new_min, new_max), bounds)

    def _refine(self, bounds: ObjectiveBounds) -> None:
        """Next finer histogram bound; after the finest, the exact value (level ``len(levels)``)."""
        level = bounds.level + 1
        if level < len(self.binned.levels):
            groups = torch.tensor([bounds.group], device=self.x2d.device)
            lo, hi = self.binned.bounds(level, groups, bounds.scale, bounds.zero_point, self.quant_min,
                                        self.quant_max)
            slack = self.slack[bounds.group]
            bounds.lower, bounds.upper = float(lo) * (1 - RTOL) - slack, float(hi) * (1 + RTOL) + slack
        else:
            self.evaluations += 1
            bounds.lower = bounds.upper = float(lp_error(self.x2d[bounds.group:bounds.group + 1], bounds.scale,
                                                         bounds.zero_point, self.quant_min, self.quant_max))
        bounds.level = level

    def less(self, a: Probe, b: Probe) -> bool:
        ba, bb = a.bounds, b.bounds
        if ba is bb:
            return False
        exact = len(self.binned.levels)
        while True:
            a_exact, b_exact = ba.level == exact, bb.level == exact
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
    scored by a nested golden-section search over the zero-point shift.

    Args:
        objective: evaluates and compares candidates of the rows of its values (exactly, or from bounds).
        group: the row to search.
        x_min, x_max: the row's smallest and largest value.
        two_sided: search the zero point too (asymmetric grid, values of both signs).
        one_side: 'pos', 'neg' or 'no': the sign of the values, for a one-sided search.
        quant_min, quant_max: the integer grid.
        range_iterations: golden-section steps over the range.

    Returns:
        The best range (min, max) as floats.
    """
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

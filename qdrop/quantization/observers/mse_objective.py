"""The objective of the MSE observers' searches, and histogram bounds of it.

The objective of a candidate quantizer (scale ``s``, zero point ``z``) on a group of values (a tensor, or one
channel) is ``mean |q(x) - x| ** p`` with ``q(x) = (clamp(round(x / s) + z, qmin, qmax) - z) * s`` and
``p = LP_NORM``.

The searches gain their speed by bounding the objective instead of evaluating it: a candidate whose lower bound
exceeds another candidate's upper bound can never be the minimiser. ``BinnedGroups`` bounds it from histograms:
count, mean, smallest and largest value of every bin at several resolutions. In a bin within one rounding cell
``|q(x) - x| ** p`` is convex in ``x``: Jensen's inequality (at the bin mean) and the chord through the bin's
extremes bound the bin's total.
"""

import math
from typing import Callable

import torch
from torch import Tensor

from ..functional import CACHE_BLOCK

LP_NORM = 2.4
NUM_RANGES = 100
# Relative slack between bounds (over summaries of the values) and exact float32 evaluations.
RTOL = 1e-5
_COARSEST_BINS = 16
_BIN_FACTOR = 4

# (min_val, max_val) -> (scale, zero_point), e.g. ObserverBase.calculate_qparams
QParamsFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def absolute_slack(x2d: Tensor) -> Tensor:
    """Per row of ``x2d`` (G, n): float rounding near a grid level leaves errors of a few ulps; their p-th powers
    stay far below (1e-6 * max|x|)^p. Returns float64 (G,)."""
    return (1e-6 * x2d.abs().amax(dim=1).to(torch.float64)).pow(LP_NORM)


def lp_error(x2d: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int) -> Tensor:
    """Exact objective of one candidate per row.

    The values are processed in blocks of about ``CACHE_BLOCK`` elements through one reused buffer, so every
    element-wise pass reads and writes cache instead of memory. ``clamp(round(x / s) + z, qmin, qmax) - z`` is
    computed as ``clamp(round(x / s), qmin - z, qmax - z)``: the same integers, as z is one.

    Args:
        x2d: the values, (G, n): one group per row.
        scale, zero_point: one candidate per row, (G,) (or one element, shared by every row).
        quant_min, quant_max: the integer grid.

    Returns:
        float64 (G,): ``mean |q(x) - x| ** LP_NORM`` per row.
    """
    groups, n = x2d.shape
    s = scale.reshape(-1, 1).to(x2d.dtype).expand(groups, 1)
    z = zero_point.reshape(-1, 1).to(x2d.dtype).expand(groups, 1)
    low, high = quant_min - z, quant_max - z
    rows_per_block, columns_per_block = max(1, CACHE_BLOCK // max(n, 1)), min(n, CACHE_BLOCK)
    buffer = x2d.new_empty(min(rows_per_block, groups) * columns_per_block)
    total = torch.zeros(groups, dtype=torch.float64, device=x2d.device)
    for row in range(0, groups, rows_per_block):
        rows = slice(row, row + rows_per_block)
        for column in range(0, n, columns_per_block):
            x = x2d[rows, column : column + columns_per_block]
            t = buffer[: x.numel()].view(x.shape)
            torch.div(x, s[rows], out=t).round_()
            torch.maximum(t, low[rows], out=t)
            torch.minimum(t, high[rows], out=t)
            t.mul_(s[rows]).sub_(x).abs_().pow_(LP_NORM)
            total[rows] += t.sum(dim=1, dtype=torch.float64)
    return total / n


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
        index = index.flatten()  # (G * n,): each value's bin; row g owns bins g * finest ..
        values = x2d.flatten()
        count = torch.bincount(index, minlength=groups * finest).to(torch.float64)
        total = torch.bincount(index, weights=values.to(torch.float64), minlength=groups * finest)
        smallest = torch.full((groups * finest,), math.inf, dtype=x2d.dtype, device=x2d.device)
        smallest.scatter_reduce_(0, index, values, reduce="amin")
        largest = torch.full_like(smallest, -math.inf)
        largest.scatter_reduce_(0, index, values, reduce="amax")
        count, total = count.view(groups, finest), total.view(groups, finest)  # (G, finest)
        smallest, largest = smallest.view(groups, finest), largest.view(groups, finest)
        self.levels: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        while True:
            self.levels.append(self._summary(count, total, smallest, largest))
            bins = count.shape[1]
            if bins <= _COARSEST_BINS:
                break
            shape = (groups, bins // _BIN_FACTOR, _BIN_FACTOR)  # neighbouring bins merge into one coarser bin
            count, total = count.view(shape).sum(2), total.view(shape).sum(2)
            smallest, largest = smallest.view(shape).amin(2), largest.view(shape).amax(2)
        self.levels.reverse()  # coarsest first
        self.num_values = n

    @staticmethod
    def _summary(count: Tensor, total: Tensor, smallest: Tensor, largest: Tensor):
        """(count, mean, smallest, largest) in the values' dtype; empty bins hold zeros."""
        filled = count > 0
        mean = torch.where(filled, total / count.clamp_min(1), torch.zeros_like(total)).to(smallest.dtype)
        return (count.to(smallest.dtype), mean, torch.where(filled, smallest, mean), torch.where(filled, largest, mean))

    def bounds(
        self, level: int, groups: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int
    ) -> tuple[Tensor, Tensor]:
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

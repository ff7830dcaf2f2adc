"""Observers: collect a range (min_val, max_val) from the tensors they see and turn it into (scale, zero_point)."""

import torch
from torch import Tensor, nn

from ..functional import quant_range
from .grid_search import grid_candidates, grid_search
from .scalar_search import BoundedObjective, golden_search

_SCALE_FLOOR = 1e-8


class ObserverBase(nn.Module):
    """Base observer built as ``(bit=8, symmetric=False, ch_axis=-1)``; ``ch_axis=-1`` means per tensor."""

    min_val: Tensor
    max_val: Tensor

    def __init__(self, bit: int = 8, symmetric: bool = False, ch_axis: int = -1):
        super().__init__()
        self.bit = bit
        self.symmetric = symmetric
        self.ch_axis = ch_axis
        self.quant_min, self.quant_max = quant_range(bit, symmetric)
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    def extra_repr(self) -> str:
        return f"bit={self.bit}, symmetric={self.symmetric}, ch_axis={self.ch_axis}"

    def calculate_qparams(self, min_val: Tensor, max_val: Tensor) -> tuple[Tensor, Tensor]:
        """Scale and zero point of the range [min_val, max_val] (always widened to contain 0).

        Args:
            min_val, max_val: the range, any equal shapes: 0-d per tensor, (C,) per channel, or (G, K) candidates.

        Returns:
            (scale, zero_point), shaped as ``min_val``; a symmetric grid has zero points 0.
        """
        min_neg = torch.minimum(min_val, torch.zeros_like(min_val))
        max_pos = torch.maximum(max_val, torch.zeros_like(max_val))
        floor = torch.tensor(_SCALE_FLOOR, dtype=min_neg.dtype, device=min_neg.device)
        if self.symmetric:
            scale = torch.maximum(-min_neg, max_pos) / (float(self.quant_max - self.quant_min) / 2)
            scale = torch.maximum(scale, floor)
            return scale, torch.zeros_like(scale)
        scale = torch.maximum((max_pos - min_neg) / float(self.quant_max - self.quant_min), floor)
        zero_point = torch.clamp(self.quant_min - torch.round(min_neg / scale), self.quant_min, self.quant_max)
        return scale, zero_point

    def _rows(self, x: Tensor) -> Tensor:
        """The observed values as (groups, values): one row per channel, or a single row."""
        x = x.detach().to(self.min_val.dtype)
        if self.ch_axis < 0:
            return x.reshape(1, -1)  # (1, numel)
        if self.ch_axis >= x.dim():
            raise ValueError(f"ch_axis={self.ch_axis} is out of range for an input of shape {tuple(x.shape)}")
        return x.transpose(0, self.ch_axis).reshape(x.shape[self.ch_axis], -1)  # (C, values per channel)

    def _range_of(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """This batch's range, one entry per row (a 0-d tensor per tensor)."""
        raise NotImplementedError

    def _accumulate(self, batch_min: Tensor, batch_max: Tensor) -> None:
        """Running min / max over batches."""
        if self.min_val.shape != batch_min.shape or torch.isinf(self.min_val).all():
            self.min_val, self.max_val = batch_min.clone(), batch_max.clone()
        else:
            self.min_val = torch.minimum(self.min_val, batch_min)
            self.max_val = torch.maximum(self.max_val, batch_max)

    def forward(self, x: Tensor) -> Tensor:
        if x.numel() == 0:
            return x
        rows = self._rows(x)
        batch_min, batch_max = self._range_of(rows)
        if self.ch_axis < 0:
            batch_min, batch_max = batch_min.reshape(()), batch_max.reshape(())
        self._accumulate(batch_min.to(self.min_val.dtype), batch_max.to(self.max_val.dtype))
        return x

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        for name in ("min_val", "max_val"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                current = getattr(self, name)
                setattr(self, name, torch.empty(state_dict[key].shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class _AveragingMixin:
    """Averages the per-batch ranges over batches instead of keeping the running extremes."""

    num_batches: int = 0

    def _accumulate(self, batch_min: Tensor, batch_max: Tensor) -> None:
        if self.num_batches == 0 or self.min_val.shape != batch_min.shape:
            self.num_batches = 0
            self.min_val, self.max_val = batch_min.clone(), batch_max.clone()
        else:
            n = self.num_batches
            self.min_val = (self.min_val * n + batch_min) / (n + 1)
            self.max_val = (self.max_val * n + batch_max) / (n + 1)
        self.num_batches += 1


class MinMaxObserver(ObserverBase):
    """Running minimum and maximum."""

    def _range_of(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        return rows.amin(dim=1), rows.amax(dim=1)


class AvgMinMaxObserver(_AveragingMixin, MinMaxObserver):
    """Minimum and maximum of each batch, averaged over batches."""


class _MSEBase(ObserverBase):
    """Range of least mean |x_q - x|^2.4. One-sided data (decided on the first batch) or a symmetric quantizer
    searches the range only; two-sided asymmetric data searches range and zero point."""

    def __init__(self, bit: int = 8, symmetric: bool = False, ch_axis: int = -1):
        super().__init__(bit, symmetric, ch_axis)
        self.one_side_dist = None

    def _sidedness(self, rows: Tensor) -> str:
        if self.one_side_dist is None:
            self.one_side_dist = "pos" if rows.min() >= 0 else "neg" if rows.max() <= 0 else "no"
        return self.one_side_dist

    def _two_sided(self, rows: Tensor) -> bool:
        return self._sidedness(rows) == "no" and not self.symmetric


class MSEObserver(_MSEBase):
    """Grid search over 100 candidate ranges (x every zero point for two-sided data); candidates are pruned with
    exact bounds, so the result equals a plain loop's over every candidate."""

    def _range_of(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        two_sided = self._two_sided(rows)
        cand_min, cand_max = grid_candidates(rows, self.quant_min, self.quant_max, two_sided, self.one_side_dist)
        per_range = self.quant_max - self.quant_min + 1 if two_sided else 1
        return grid_search(rows, cand_min, cand_max, self.calculate_qparams, self.quant_min, self.quant_max, per_range)


class AvgMSEObserver(_AveragingMixin, MSEObserver):
    """MSEObserver's per-batch result averaged over batches."""


class MSEFastObserver(_MSEBase):
    """Bounded scalar minimisation (golden section) over the range, nested with one over the zero-point shift for
    two-sided data; per tensor (per channel: every channel searched on its own)."""

    def _range_of(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        two_sided = self._two_sided(rows)
        objective = BoundedObjective(rows, self.calculate_qparams, self.quant_min, self.quant_max)
        row_min, row_max = rows.amin(dim=1).tolist(), rows.amax(dim=1).tolist()
        found = [
            golden_search(
                objective, g, row_min[g], row_max[g], two_sided, self.one_side_dist, self.quant_min, self.quant_max
            )
            for g in range(rows.shape[0])
        ]
        result = rows.new_tensor(found)
        return result[:, 0], result[:, 1]


class AvgMSEFastObserver(_AveragingMixin, MSEFastObserver):
    """MSEFastObserver's per-batch result averaged over batches."""

"""Element-wise weighting and reduction shared by the losses."""

from typing import Optional

import torch

_REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str, where: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{where}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def weight_reduce_loss(
    loss: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    avg_factor: Optional[float] = None,
) -> torch.Tensor:
    """Multiply by `weight`, then reduce; with `avg_factor` the mean is `sum / (avg_factor + float32 eps)`."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        return loss
    if reduction == "mean":
        return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    if reduction == "none":
        return loss
    raise ValueError("weight_reduce_loss: avg_factor can not be used with reduction='sum'")

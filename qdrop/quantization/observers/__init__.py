"""Observers: they watch tensors and choose quantization ranges (min/max, or the range that minimises the
quantization error). The MSE observers' range searches live beside them: the candidate grid (``grid_search``),
the bounded scalar search of the *Fast observers (``scalar_search``) and the error they minimise
(``mse_objective``)."""

from .observer import (
    AvgMinMaxObserver,
    AvgMSEFastObserver,
    AvgMSEObserver,
    MinMaxObserver,
    MSEFastObserver,
    MSEObserver,
    ObserverBase,
)

__all__ = [
    "AvgMSEFastObserver",
    "AvgMSEObserver",
    "AvgMinMaxObserver",
    "MSEFastObserver",
    "MSEObserver",
    "MinMaxObserver",
    "ObserverBase",
]

"""The MSE observers' grid search as a plain loop: every candidate evaluated on every value.

Tests check that the pruned search picks the same candidate; benchmarks/observers.py times it against the pruned one.
"""

from typing import Optional

import torch
from torch import Tensor

from qdrop.quantization.observers.mse_objective import QParamsFn, lp_error


def plain_grid_search(
    x2d: Tensor,
    cand_min: Tensor,
    cand_max: Tensor,
    calculate_qparams: QParamsFn,
    quant_min: int,
    quant_max: int,
    columns: Optional[range] = None,
) -> tuple[Tensor, Tensor]:
    """Loop over the candidates, evaluate each on every value, keep the first strict improvement.

    Args:
        x2d: the values, (G, n): one group per row.
        cand_min, cand_max: the candidate ranges, (G, C), in loop order.
        calculate_qparams: (min, max) -> (scale, zero_point) of the observer.
        quant_min, quant_max: the integer grid.
        columns: restricts the loop to some candidates (benchmarks time a subset of a very slow loop).

    Returns:
        (min, max) of the chosen candidate per row, each (G,).
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

"""Top-k with the tie order of a stable descending sort, at the cost of a top-k."""

import torch


def sorted_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and indices of the first `k` entries of `scores.sort(descending=True, stable=True)` (1-D scores).

    mmdetection selects candidates with a full sort; equal scores then keep their index order, which NMS can depend
    on. Only the entries tying or beating the k-th value are sorted here.
    """
    if k >= scores.numel():
        return scores.sort(descending=True, stable=True)
    kth_value = scores.topk(k, sorted=False).values.min()
    contenders = torch.nonzero(scores >= kth_value, as_tuple=False).flatten()
    values, order = scores[contenders].sort(descending=True, stable=True)
    return values[:k], contenders[order[:k]]

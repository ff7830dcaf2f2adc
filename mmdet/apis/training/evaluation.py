"""Evaluation of the model during training."""

import logging
from typing import Optional

from torch import nn
from torch.utils.data import DataLoader

from mmdet.apis.test import multi_gpu_test, single_gpu_test


def evaluate(
    model: nn.Module, loader: DataLoader, distributed: bool, eval_kwargs: dict, logger: logging.Logger
) -> Optional[dict[str, float]]:
    """Run the test-mode forward over `loader` and score the results; the model goes back to train mode.

    Args:
        model: the detector being trained (or its DistributedDataParallel wrapper).
        loader: the validation loader (its dataset provides `evaluate`).
        distributed: gather the results of every process on rank 0.
        eval_kwargs: keyword arguments of `dataset.evaluate`, e.g. `metric='bbox'`.
        logger: receives the evaluation's report.

    Returns:
        The numeric metrics by name on rank 0; None on the other ranks.
    """
    model.eval()
    if distributed:
        results = multi_gpu_test(model, loader)
    else:
        results = single_gpu_test(model, loader, show_progress=False)
    model.train()
    if results is None:  # not rank 0
        return None
    metrics = loader.dataset.evaluate(results, logger=logger, **eval_kwargs)
    return {name: float(value) for name, value in metrics.items() if isinstance(value, (int, float))}

"""Evaluation on the test split: COCO metrics of a detector (PyTorch, or ONNX Runtime through
`qdrop.deploy.OnnxDetector`) and the metrics record `eval_<timestamp>.json`, written atomically. Every command that
evaluates goes through here."""

import json
import logging
import os.path as osp
import pickle
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from torch import nn

from mmdet.apis import evaluation_kwargs, multi_gpu_test
from mmdet.utils.atomic_io import atomic_open, atomic_write_text
from qdrop.solver.data import TestData


def evaluate(
    model: nn.Module,
    test_data: TestData,
    cfg,
    metrics: Sequence[str],
    logger: Optional[logging.Logger] = None,
    show_progress: bool = True,
    eval_options: Optional[Mapping[str, Any]] = None,
    results_file: Optional[str] = None,
) -> Optional[dict]:
    """COCO metrics of a model on the test split; every rank runs its shard and rank 0 scores them.

    Args:
        model: the detector to evaluate, called in test mode (`return_loss=False, rescale=True`).
        test_data: the test split and its loader (`qdrop.solver.data.build_test_loader`).
        cfg: the config, whose `evaluation` dict gives the keyword arguments of `dataset.evaluate`.
        metrics: e.g. ['bbox']; none: the results are only written to `results_file`.
        logger: receives the evaluation report.
        show_progress: a progress bar on rank 0.
        eval_options: more keyword arguments of `dataset.evaluate` (e.g. classwise=True).
        results_file: a .pkl file for the raw per-image results (written atomically on rank 0).

    Returns:
        The metrics by name on rank 0 (e.g. bbox_mAP, bbox_mAP_50, ...; empty without metrics); None on the other
        ranks.
    """
    results = multi_gpu_test(model, test_data.loader, show_progress=show_progress)
    if results is None:
        return None
    if results_file:
        with atomic_open(results_file, "wb") as f:
            pickle.dump(results, f)
        if logger is not None:
            logger.info(f"results written to {results_file}")
    if not metrics:
        return {}
    kwargs = evaluation_kwargs(cfg, metrics)
    kwargs.update(eval_options or {})
    return dict(test_data.dataset.evaluate(results, logger=logger, **kwargs))


def write_eval_record(work_dir: str, timestamp: str, metric: Mapping, **sources: str) -> str:
    """Write `eval_<timestamp>.json` into the work dir atomically: a kill leaves no partial record.

    Args:
        work_dir: the run's work dir.
        timestamp: the run's timestamp, as in its log file name.
        metric: the metrics by name.
        sources: what was evaluated, e.g. config=..., checkpoint=..., onnx=...

    Returns:
        The record's path.
    """
    path = osp.join(work_dir, f"eval_{timestamp}.json")
    atomic_write_text(path, json.dumps({**sources, "metric": dict(metric)}, indent=2))
    return path

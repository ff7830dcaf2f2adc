"""COCO evaluation of an exported detector: the test split through the config's pipeline, the network in ONNX
Runtime, the heads' own post-processing, and `eval_<timestamp>.json` in the work dir as tools/test.py writes it."""

import json
import os
import os.path as osp
import time
from collections.abc import Sequence
from typing import Optional

from mmdet.apis import evaluation_kwargs, single_gpu_test
from mmdet.apis.inference import prepare_test_config
from mmdet.datasets import build_dataloader, build_dataset
from mmdet.models import build_detector
from mmdet.utils import get_root_logger, load_config

from .runtime import OnnxDetector


def evaluate_onnx(
    config_path: str,
    onnx_path: str,
    metrics: Sequence[str] = ("bbox",),
    work_dir: Optional[str] = None,
    optimization: str = "all",
    threads: int = 0,
) -> dict:
    """Evaluate ``onnx_path`` (written by tools/deploy/export_onnx.py from a checkpoint of ``config_path``).

    Args:
        config_path: the detector's config (data set, pipeline, test_cfg of the heads).
        onnx_path: the network graph; a two-stage detector's box-head graph is read from beside it.
        metrics: dataset.evaluate metrics, e.g. ('bbox',).
        work_dir: where the log and eval_<timestamp>.json go (none written without it).
        optimization: ONNX Runtime graph optimization level ('all' fuses QDQ into integer kernels).
        threads: ONNX Runtime intra-op threads (0: its default).

    Returns:
        The metrics dict, e.g. {'bbox_mAP': ..., ...}.
    """
    cfg = prepare_test_config(load_config(config_path))
    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    log_file = None
    if work_dir:
        os.makedirs(osp.abspath(work_dir), exist_ok=True)
        log_file = osp.join(work_dir, f"{timestamp}.log")
    logger = get_root_logger(log_file=log_file, log_level=cfg.get("log_level", "INFO"))
    if not osp.isfile(onnx_path):
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file (write it with tools/deploy/export_onnx.py)")

    dataset = build_dataset(cfg.data.test)
    loader = build_dataloader(
        dataset, samples_per_gpu=1, workers_per_gpu=cfg.data.get("workers_per_gpu", 2), dist=False, shuffle=False
    )
    model = build_detector(cfg.model, test_cfg=cfg.get("test_cfg"))
    detector = OnnxDetector.from_file(model, onnx_path, optimization=optimization, threads=threads)
    _check_graph_fits(detector, config_path, onnx_path)
    logger.info(f"testing {onnx_path} in ONNX Runtime (CPU, optimization {optimization}) on {len(dataset)} images")
    outputs = single_gpu_test(detector, loader)
    metric = dict(dataset.evaluate(outputs, logger=logger, **evaluation_kwargs(cfg, metrics)))
    logger.info(f"metrics: {metric}")
    if work_dir:
        with open(osp.join(work_dir, f"eval_{timestamp}.json"), "w") as f:
            json.dump(dict(config=config_path, onnx=onnx_path, metric=metric), f, indent=2)
    return metric


def _check_graph_fits(detector: OnnxDetector, config_path: str, onnx_path: str) -> None:
    """The network graph's outputs must be the ones the config's detector post-processes."""
    names = {output.name for output in detector.sessions["network"].get_outputs()}
    model = detector.detector
    if getattr(model, "roi_head", None) is not None:
        expected = {f"rpn_cls_{i}" for i in range(len(model.rpn_head.prior_generator.strides))}
    else:
        expected = {f"cls_score_{i}" for i in range(len(model.bbox_head.prior_generator.strides))}
    if not expected <= names:
        raise ValueError(
            f"{onnx_path} does not fit the detector of {config_path}: graph outputs {sorted(names)}, "
            f"expected {sorted(expected)}"
        )

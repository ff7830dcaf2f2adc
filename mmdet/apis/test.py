"""Run a detector over a test loader: one process, or every rank on its shard with results gathered to rank 0."""

from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from mmdet.core.mask import encode_results
from mmdet.datasets.samplers import DistributedTestSampler, interleave_shards
from mmdet.utils import get_dist_info, to_device

# Keys of a config's `evaluation` dict that configure the training-time evaluation hook, not `dataset.evaluate`.
EVAL_HOOK_KEYS = (
    "interval",
    "start",
    "by_epoch",
    "save_best",
    "rule",
    "greater_keys",
    "less_keys",
    "test_fn",
    "out_dir",
    "file_client_args",
    "tmpdir",
    "gpu_collect",
    "broadcast_bn_buffer",
    "dynamic_intervals",
)


def evaluation_kwargs(cfg, metrics: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """The keyword arguments of `dataset.evaluate` in the config's `evaluation` dict (hook keys left out).

    Args:
        cfg: a config; its `evaluation` dict may be absent.
        metrics: when given, they replace the config's `metric`.

    Returns:
        A new dict, e.g. {'metric': ['bbox'], 'classwise': True}.
    """
    kwargs = {key: value for key, value in dict(cfg.get("evaluation") or {}).items() if key not in EVAL_HOOK_KEYS}
    if metrics is not None:
        kwargs["metric"] = list(metrics)
    return kwargs


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _run(model: nn.Module, data_loader, progress: Optional[tqdm], step: int) -> list:
    model.eval()
    device = _model_device(model)
    results = []
    for batch in data_loader:
        with torch.no_grad():
            batch_results = model(return_loss=False, rescale=True, **to_device(batch, device))
        # A mask detector's image-sized masks become COCO RLE at once: light to keep and to gather.
        results.extend(encode_results(batch_results))
        if progress is not None:
            progress.update(len(batch_results) * step)
    return results


def single_gpu_test(model: nn.Module, data_loader, show_progress: bool = True) -> list:
    """Per-image results (lists of per-class (k, 5) arrays) in loader order, with `rescale=True`. A mask detector's
    result is the tuple (that list, per-class lists of masks), each mask RLE-encoded (pycocotools dicts)."""
    progress = tqdm(total=len(data_loader.dataset), desc="test") if show_progress else None
    try:
        return _run(model, data_loader, progress, step=1)
    finally:
        if progress is not None:
            progress.close()


def multi_gpu_test(model: nn.Module, data_loader, show_progress: bool = True) -> Optional[list]:
    """Every rank runs its shard (the loader's DistributedTestSampler); rank 0 gets all results in dataset
    order (shards re-interleaved, padding dropped), the other ranks get None. Without a process group this
    is `single_gpu_test`."""
    rank, world_size = get_dist_info()
    if world_size == 1:
        return single_gpu_test(model, data_loader, show_progress)
    if not isinstance(data_loader.sampler, DistributedTestSampler):
        raise ValueError(
            "multi_gpu_test needs a loader built with build_dataloader(..., dist=True, shuffle=False) "
            f"(a DistributedTestSampler), got sampler {type(data_loader.sampler).__name__}"
        )
    size = len(data_loader.dataset)
    progress = tqdm(total=size, desc="test") if show_progress and rank == 0 else None
    try:
        results = _run(model, data_loader, progress, step=world_size)
    finally:
        if progress is not None:
            progress.close()
    shards = [None] * world_size
    dist.all_gather_object(shards, results)
    return interleave_shards(shards, size) if rank == 0 else None

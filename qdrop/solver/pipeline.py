"""The steps of a QDrop run that the command line (quant_coco.py) and the demo share."""
import copy
import logging
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mmdet.datasets import build_dataloader, build_dataset
from mmdet.apis import multi_gpu_test
from mmdet.models import build_detector
from mmdet.utils import fuse_conv_bn, load_checkpoint
from qdrop.quantization import disable_all
from qdrop.solver.distributed import rank_and_world

CALIBRATION_BATCH_SIZE = 2  # images per calibration batch, as in the original
# Keys of a config's `evaluation` dict that configure the training-time hook, not CocoDataset.evaluate.
EVAL_HOOK_KEYS = ("interval", "tmpdir", "start", "gpu_collect", "save_best", "rule", "dynamic_intervals", "by_epoch")


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def build_fp_detector(cfg, checkpoint: str, device: torch.device, logger: Optional[logging.Logger] = None,
                      ) -> nn.Module:
    """The float detector of `cfg` with `checkpoint` loaded (another architecture's checkpoint raises
    CheckpointMismatchError) and BatchNorm folded into the convs, in eval mode on `device`."""
    cfg.model.pop("pretrained", None)
    if "backbone" in cfg.model:
        cfg.model.backbone.pop("init_cfg", None)
    model = build_detector(cfg.model, test_cfg=cfg.get("test_cfg"))
    loaded = load_checkpoint(model, checkpoint, map_location="cpu", logger=logger)
    classes = loaded.get("meta", {}).get("CLASSES")
    if classes is not None:
        model.CLASSES = tuple(classes)
    fuse_conv_bn(model)
    return model.to(device).eval()


def calibration_batches(cfg, num_images: int, seed: int) -> List[Dict]:
    """This rank's share of `num_images` train images (train pipeline, batches of 2), kept in host memory.

    The draw is seeded, so a rerun (resume) sees the same images."""
    rank, world = rank_and_world()
    per_rank = num_images // world
    if per_rank < 1:
        raise ValueError(f"calibrate={num_images} is fewer than the {world} processes: each needs at least 1 image")
    dataset = build_dataset(cfg.data.train)
    if len(dataset) < num_images:
        raise ValueError(f"calibrate={num_images} exceeds the {len(dataset)} images of the train set")
    seed_everything(seed + rank)
    loader = build_dataloader(dataset, CALIBRATION_BATCH_SIZE, workers_per_gpu=0, dist=world > 1, shuffle=True,
                              seed=seed)
    batches, taken = [], 0
    for batch in loader:
        keep = min(per_rank - taken, batch["img"].shape[0])
        batches.append({"img": batch["img"][:keep], "img_metas": batch["img_metas"][:keep]})
        taken += keep
        if taken >= per_rank:
            break
    return batches


def build_test_loader(cfg) -> Tuple[object, object]:
    """(test dataset, its loader: one image per batch, sharded over ranks when distributed)."""
    _, world = rank_and_world()
    test_cfg = copy.deepcopy(cfg.data.test)
    test_cfg.test_mode = True
    dataset = build_dataset(test_cfg)
    loader = build_dataloader(dataset, samples_per_gpu=1, workers_per_gpu=cfg.data.get("workers_per_gpu", 0),
                              dist=world > 1, shuffle=False)
    return dataset, loader


def evaluate(model: nn.Module, dataset, loader, cfg, metrics: Sequence[str], logger=None,
             show_progress: bool = True) -> Optional[Dict]:
    """COCO metrics of `model` on the test set (rank 0; None on other ranks)."""
    results = multi_gpu_test(model, loader, show_progress=show_progress)
    if results is None:
        return None
    eval_kwargs = dict(cfg.get("evaluation", {}))
    for key in EVAL_HOOK_KEYS:
        eval_kwargs.pop(key, None)
    eval_kwargs["metric"] = list(metrics)
    return dict(dataset.evaluate(results, logger=logger, **eval_kwargs))


def float_reference(q_model: nn.Module) -> nn.Module:
    """A copy of the wrapped model with every quantizer passing its input through: the float target of
    reconstruction, whose module names match the quantized model's."""
    fp_model = copy.deepcopy(q_model)
    disable_all(fp_model)
    for param in fp_model.parameters():
        param.requires_grad_(False)
    return fp_model

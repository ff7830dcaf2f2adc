"""The data of a run: this rank's calibration batches and the test set's loader."""

import copy
from typing import NamedTuple, Optional

from torch.utils.data import DataLoader, Dataset

from mmdet.apis.train import set_random_seed
from mmdet.datasets import build_dataloader, build_dataset
from mmdet.utils import get_dist_info
from qdrop.solver.preflight import RunInputError

CALIBRATION_BATCH_SIZE = 2  # images per calibration batch


class TestData(NamedTuple):
    """The test split of a config and its loader."""

    dataset: Dataset
    loader: DataLoader


def calibration_batches(cfg, num_images: int, seed: int, dataset: Optional[Dataset] = None) -> list[dict]:
    """This rank's share of the calibration images, drawn from the train split with the train pipeline.

    The draw is seeded, so a rerun (resume) sees the same images.

    Args:
        cfg: the mmdetection config (`data.train`).
        num_images: images over all ranks (the q_config's `calibrate`), split evenly.
        seed: the run's seed.
        dataset: the train split when already built from `cfg.data.train`.

    Returns:
        Batches of `CALIBRATION_BATCH_SIZE` images (the last may be smaller), kept in host memory, each with
        `img` (B, 3, H, W) and `img_metas` (B dicts).
    """
    rank, world = get_dist_info()
    per_rank = num_images // world
    if per_rank < 1:
        raise RunInputError(f"calibrate={num_images} is fewer than the {world} processes: each needs at least 1 image")
    dataset = build_dataset(cfg.data.train) if dataset is None else dataset
    if len(dataset) < num_images:
        raise RunInputError(f"calibrate={num_images} exceeds the {len(dataset)} images of the train set")
    set_random_seed(seed + rank)
    loader = build_dataloader(
        dataset, CALIBRATION_BATCH_SIZE, workers_per_gpu=0, dist=world > 1, shuffle=True, seed=seed
    )
    batches, taken = [], 0
    for batch in loader:
        keep = min(per_rank - taken, batch["img"].shape[0])
        batches.append({"img": batch["img"][:keep], "img_metas": batch["img_metas"][:keep]})
        taken += keep
        if taken >= per_rank:
            break
    return batches


def build_test_loader(cfg) -> TestData:
    """The test split of a config in test mode, one image per batch, sharded over ranks when distributed.

    Args:
        cfg: the mmdetection config (`data.test`, optional `data.workers_per_gpu`).

    Returns:
        (dataset, loader).
    """
    _, world = get_dist_info()
    test_cfg = copy.deepcopy(cfg.data.test)
    test_cfg.test_mode = True
    dataset = build_dataset(test_cfg)
    loader = build_dataloader(
        dataset, samples_per_gpu=1, workers_per_gpu=cfg.data.get("workers_per_gpu", 0), dist=world > 1, shuffle=False
    )
    return TestData(dataset, loader)

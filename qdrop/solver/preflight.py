"""Checks of a run's inputs, done before the model is built and any long step starts."""

from collections.abc import Sequence
from typing import Optional

from torch.utils.data import Dataset

from mmdet.datasets import DATASETS, verify_dataset_images
from mmdet.models.builder import check_model_types as check_types
from mmdet.utils.errors import UserError
from qdrop.config.q_config import QConfig


class RunInputError(UserError, ValueError):
    """An input of the run does not fit another (calibration size against processes or the train set)."""


def check_calibration_split(q_config: QConfig, q_config_path: str, world_size: int) -> None:
    """`calibrate` must split evenly over the processes (each takes the same number of images).

    Raises:
        RunInputError: naming the q_config file, the value and the nearest multiples of `world_size`.
    """
    if q_config.calibrate % world_size:
        lower = q_config.calibrate - q_config.calibrate % world_size
        choices = f"{lower} or {lower + world_size}" if lower else str(world_size)
        raise RunInputError(
            f"{q_config_path}: calibrate: {q_config.calibrate} images cannot be split evenly over "
            f"{world_size} processes; use a multiple of {world_size} (e.g. {choices})"
        )


def check_calibration_size(q_config: QConfig, q_config_path: str, train_set: Dataset) -> None:
    """The train split must hold at least `calibrate` images (after the dataset's own filtering).

    Raises:
        RunInputError: naming the q_config file, `calibrate`, the train set's size and its annotation file.
    """
    if len(train_set) < q_config.calibrate:
        source = getattr(train_set, "ann_file", "data.train")
        raise RunInputError(
            f"{q_config_path}: calibrate: {q_config.calibrate} images requested but the train set "
            f"({source}) has {len(train_set)} usable images; lower calibrate to at most "
            f"{len(train_set)}"
        )


def check_metric_names(cfg, metrics: Sequence[str]) -> None:
    """The requested --eval metrics are ones the test set's dataset class evaluates (checked before any data loads).

    Raises:
        KeyError: an unsupported metric (see `CocoDataset.check_metrics`).
        RunInputError: 'segm' for a detector without a mask head.
    """
    dataset_cls = DATASETS.get(cfg.data.test.type)
    check_metrics = getattr(dataset_cls, "check_metrics", None)
    if check_metrics is not None:
        check_metrics(list(metrics))
    roi_head = cfg.model.get("roi_head") or {}
    if "segm" in metrics and not roi_head.get("mask_head"):
        raise RunInputError(
            f"--eval segm: the {cfg.model.type} of this config predicts no masks (no roi_head.mask_head); "
            "evaluate bbox only"
        )


def check_test_set(test_set: Dataset, show_progress: Optional[bool] = None) -> None:
    """Every test image exists and is a complete image file (headers only; a progress bar for large sets).

    Raises:
        ImageFileError: naming the annotation file and the missing or damaged images.
    """
    verify_dataset_images(test_set, progress=show_progress)


def check_model_types(cfg, config_path: str) -> None:
    """Every model type the config names (detector, backbone, neck, heads) is one the project implements (checked
    before any data is read).

    Raises:
        UnsupportedModelError: naming the type, where it sits and the supported types.
    """
    check_types(cfg.model, config_path)

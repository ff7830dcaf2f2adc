"""Build a detector from a config (and checkpoint) and run it on single images."""

import warnings
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from mmdet.datasets import COCO_CLASSES, DATASETS, CocoDataset
from mmdet.datasets.collate import collate
from mmdet.datasets.pipelines import Compose
from mmdet.utils import apply_cfg_options, load_checkpoint, load_config, to_device

ImageInput = Union[str, np.ndarray]


def prepare_test_config(cfg: Config) -> Config:
    """The test-time changes of mmdetection's tools: no pretrained download, no train_cfg, test mode."""
    if "pretrained" in cfg.model:
        cfg.model.pretrained = None
    elif cfg.model.get("backbone") is not None and "init_cfg" in cfg.model.backbone:
        cfg.model.backbone.init_cfg = None
    cfg.model.train_cfg = None
    if "data" in cfg and "test" in cfg.data:
        cfg.data.test.test_mode = True
    return cfg


def dataset_classes(cfg: Config) -> tuple:
    """Class names of `cfg.data.test`: its `classes` if set, else its dataset type's defaults (COCO's if none)."""
    test = cfg.get("data", {}).get("test")
    if test is None:
        return COCO_CLASSES
    dataset_cls = DATASETS.get(test.get("type", "CocoDataset")) or CocoDataset
    return dataset_cls.get_classes(test.get("classes"))


def init_detector(
    config: Union[str, Config],
    checkpoint: Optional[str] = None,
    device: Union[str, torch.device] = "cpu",
    cfg_options: Optional[dict] = None,
) -> nn.Module:
    """Detector in eval mode on `device`, with `model.cfg` and `model.CLASSES` (checkpoint meta, else the
    test dataset's classes)."""
    from mmdet.models import build_detector

    if isinstance(config, str):
        config = load_config(config, cfg_options)
    elif isinstance(config, Config):
        if cfg_options:
            apply_cfg_options(config, cfg_options)
    else:
        raise TypeError(f"config must be a path or an mmengine Config, got {type(config).__name__}")
    config = prepare_test_config(config)
    model = build_detector(config.model, test_cfg=config.get("test_cfg"), source=config.filename)
    classes = None
    if checkpoint is not None:
        meta = load_checkpoint(model, checkpoint, map_location="cpu").get("meta") or {}
        classes = meta.get("CLASSES")
        if classes is None:
            warnings.warn(
                f"checkpoint {checkpoint} has no CLASSES in its meta; using the dataset's class names", stacklevel=2
            )
    model.CLASSES = tuple(classes) if classes is not None else dataset_classes(config)
    model.cfg = config
    model.to(device)
    model.eval()
    return model


def _test_pipeline(cfg: Config, from_array: bool) -> Compose:
    steps = [dict(step) for step in cfg.data.test.pipeline]
    if from_array:
        steps[0]["type"] = "LoadImageFromWebcam"
    return Compose(steps)


def inference_detector(model: nn.Module, imgs: Union[ImageInput, Sequence[ImageInput]]) -> Union[list, list[list]]:
    """Detect on an image path or BGR uint8 array (or a list of them) with the test pipeline of `model.cfg`.

    Returns, per image, a list of num_classes float32 arrays (k, 5) in original-image pixels."""
    single = isinstance(imgs, (str, np.ndarray))
    images = [imgs] if single else list(imgs)
    if not images:
        raise ValueError("inference_detector got an empty list of images")
    from_array = isinstance(images[0], np.ndarray)
    if any(isinstance(image, np.ndarray) != from_array for image in images):
        raise TypeError("inference_detector: pass either all paths or all arrays")
    pipeline = _test_pipeline(model.cfg, from_array)
    samples = []
    for image in images:
        results = dict(img=image) if from_array else dict(img_info=dict(filename=image), img_prefix=None)
        samples.append(pipeline(results))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    batch = to_device(collate(samples), device)
    with torch.no_grad():
        results = model(return_loss=False, rescale=True, **batch)
    return results[0] if single else results

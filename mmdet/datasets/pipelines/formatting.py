"""Turn numpy results into tensors and pick what a sample carries."""

from collections.abc import Sequence

import numpy as np
import torch

from mmdet.utils.errors import ConfigKeyError

from ..builder import PIPELINES

DEFAULT_META_KEYS = (
    "filename",
    "ori_filename",
    "ori_shape",
    "img_shape",
    "pad_shape",
    "scale_factor",
    "flip",
    "flip_direction",
    "img_norm_cfg",
)


def to_tensor(data) -> torch.Tensor:
    """numpy array / tensor / int / float / sequence -> tensor (numpy dtypes kept)."""
    if torch.is_tensor(data):
        return data
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(data))
    if isinstance(data, int):
        return torch.tensor([data], dtype=torch.int64)
    if isinstance(data, float):
        return torch.tensor([data], dtype=torch.float32)
    if isinstance(data, Sequence) and not isinstance(data, str):
        return torch.tensor(data)
    raise TypeError(f"cannot convert {type(data).__name__} to a tensor")


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC (or HW) array -> CHW tensor."""
    if img.ndim == 2:
        img = img[..., None]
    return to_tensor(img.transpose(2, 0, 1))


@PIPELINES.register_module()
class ImageToTensor:
    def __init__(self, keys: Sequence[str] = ("img",)):
        self.keys = list(keys)

    def __call__(self, results: dict) -> dict:
        for key in self.keys:
            results[key] = image_to_tensor(results[key])
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={self.keys})"


@PIPELINES.register_module()
class DefaultFormatBundle:
    """Image -> CHW tensor; gt boxes (float32, N x 4), labels (int64, N) and masks (uint8, N x H x W) -> tensors.

    Also fills `pad_shape`, `scale_factor` and `img_norm_cfg` when an earlier step did not (as mmdetection)."""

    def __call__(self, results: dict) -> dict:
        if "img" in results:
            img = results["img"]
            results.setdefault("pad_shape", img.shape)
            results.setdefault("scale_factor", np.ones(4, dtype=np.float32))
            channels = 1 if img.ndim == 2 else img.shape[2]
            results.setdefault(
                "img_norm_cfg",
                dict(mean=np.zeros(channels, dtype=np.float32), std=np.ones(channels, dtype=np.float32), to_rgb=False),
            )
            results["img"] = image_to_tensor(img)
        for key in ("gt_bboxes", "gt_bboxes_ignore"):
            if key in results:
                results[key] = to_tensor(np.asarray(results[key], dtype=np.float32).reshape(-1, 4))
        if "gt_labels" in results:
            results["gt_labels"] = to_tensor(np.asarray(results["gt_labels"], dtype=np.int64).reshape(-1))
        if "gt_masks" in results:
            results["gt_masks"] = to_tensor(np.asarray(results["gt_masks"], dtype=np.uint8))
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@PIPELINES.register_module()
class Collect:
    """Keep `keys` as data and gather `meta_keys` into `img_metas` (a plain dict; no DataContainer)."""

    def __init__(self, keys: Sequence[str], meta_keys: Sequence[str] = DEFAULT_META_KEYS):
        self.keys = list(keys)
        self.meta_keys = list(meta_keys)

    def __call__(self, results: dict) -> dict:
        missing = [key for key in self.keys + self.meta_keys if key not in results]
        if missing:
            raise ConfigKeyError(f"Collect: keys {missing} are not in the results (available: {sorted(results)})")
        data = {"img_metas": {key: results[key] for key in self.meta_keys}}
        for key in self.keys:
            data[key] = results[key]
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={self.keys}, meta_keys={self.meta_keys})"

"""Geometric and photometric transforms with mmdetection 2.28 / mmcv numerics."""

import math
from collections.abc import Sequence
from typing import Optional, Union

import cv2
import numpy as np

from mmdet.utils.errors import ConfigKeyError, ConfigValueError

from ..builder import PIPELINES

_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Keep-ratio target size: the largest factor fitting max(scale) on the long and min(scale) on the short
    side; each side rounded half up as int(side * s + 0.5)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def _is_scale(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value)


def as_scale_list(img_scale) -> list:
    """None -> []; one (long, short) pair (tuple or list) -> [pair]; a list of pairs -> the pairs as tuples."""
    if img_scale is None:
        return []
    scales = [img_scale] if _is_scale(img_scale) else list(img_scale)
    if not scales or not all(_is_scale(scale) for scale in scales):
        raise ConfigValueError(f"img_scale must be a (long, short) integer pair or a list of them, got {img_scale!r}")
    return [tuple(scale) for scale in scales]


def resize_masks(masks: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, H, W) uint8 masks resized to (N, height, width) with OpenCV nearest-neighbour, one mask at a time."""
    resized = np.zeros((masks.shape[0], height, width), dtype=masks.dtype)
    for i, mask in enumerate(masks):
        resized[i] = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return resized


@PIPELINES.register_module()
class Resize:
    """Resize the image (OpenCV, on the uint8 image) and boxes.

    The target scale is `results['scale']` when present (set by MultiScaleFlipAug), else `img_scale`
    (one scale, or several picked per image: `multiscale_mode='value'` chooses one of them, `'range'`
    draws long and short edges uniformly between them). `scale_factor` is the float32 vector
    [w_scale, h_scale, w_scale, h_scale] computed from the integer sizes.
    """

    def __init__(
        self,
        img_scale=None,
        multiscale_mode: str = "range",
        keep_ratio: bool = True,
        bbox_clip_border: bool = True,
        backend: str = "cv2",
        interpolation: str = "bilinear",
    ):
        if multiscale_mode not in ("range", "value"):
            raise ConfigValueError(f"multiscale_mode must be 'range' or 'value', got '{multiscale_mode}'")
        if backend != "cv2":
            raise ConfigValueError(f"only the 'cv2' resize backend is available, got '{backend}'")
        if interpolation not in _INTERPOLATIONS:
            raise ConfigValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got '{interpolation}'")
        self.img_scale = as_scale_list(img_scale)
        if multiscale_mode == "range" and len(self.img_scale) > 2:
            raise ConfigValueError(f"multiscale_mode='range' needs two scales (the bounds), got {len(self.img_scale)}")
        self.multiscale_mode = multiscale_mode
        self.keep_ratio = keep_ratio
        self.bbox_clip_border = bbox_clip_border
        self.interpolation = interpolation

    def _choose_scale(self, results: dict) -> tuple[int, int]:
        if "scale" in results:
            return tuple(results["scale"])
        if not self.img_scale:
            raise ConfigKeyError("Resize has no img_scale and the results carry no 'scale' (set by MultiScaleFlipAug)")
        if len(self.img_scale) == 1:
            return self.img_scale[0]
        if self.multiscale_mode == "value":
            return self.img_scale[np.random.randint(len(self.img_scale))]
        longs = [max(s) for s in self.img_scale]
        shorts = [min(s) for s in self.img_scale]
        long_edge = int(np.random.randint(min(longs), max(longs) + 1))
        return long_edge, int(np.random.randint(min(shorts), max(shorts) + 1))

    def __call__(self, results: dict) -> dict:
        scale = self._choose_scale(results)
        img = results["img"]
        height, width = img.shape[:2]
        new_w, new_h = rescale_size(width, height, scale) if self.keep_ratio else scale
        flag = _INTERPOLATIONS[self.interpolation]
        for key in results.get("img_fields", ["img"]):
            results[key] = cv2.resize(results[key], (new_w, new_h), interpolation=flag)
        w_scale, h_scale = new_w / width, new_h / height
        scale_factor = np.array([w_scale, h_scale, w_scale, h_scale], dtype=np.float32)
        results["img_shape"] = results["img"].shape
        results["pad_shape"] = results["img"].shape
        results["scale"] = scale
        results["scale_factor"] = scale_factor
        results["keep_ratio"] = self.keep_ratio
        for key in results.get("bbox_fields", []):
            bboxes = results[key] * scale_factor
            if self.bbox_clip_border:
                bboxes[:, 0::2] = np.clip(bboxes[:, 0::2], 0, new_w)
                bboxes[:, 1::2] = np.clip(bboxes[:, 1::2], 0, new_h)
            results[key] = bboxes
        for key in results.get("mask_fields", []):
            masks = results[key]
            if self.keep_ratio:
                mask_w, mask_h = rescale_size(masks.shape[2], masks.shape[1], scale)
            else:
                mask_w, mask_h = new_w, new_h
            results[key] = resize_masks(masks, mask_w, mask_h)
        return results

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(img_scale={self.img_scale}, multiscale_mode='{self.multiscale_mode}', "
            f"keep_ratio={self.keep_ratio}, bbox_clip_border={self.bbox_clip_border})"
        )


_FLIP_AXES = {"horizontal": (1,), "vertical": (0,), "diagonal": (0, 1)}


def flip_bboxes(bboxes: np.ndarray, img_shape: Sequence[int], direction: str) -> np.ndarray:
    """Mirror (x1, y1, x2, y2) boxes inside an image of shape (h, w, ...): x' = W - x (no -1)."""
    if direction not in _FLIP_AXES:
        raise ConfigValueError(f"flip direction must be one of {sorted(_FLIP_AXES)}, got '{direction}'")
    height, width = img_shape[:2]
    flipped = bboxes.copy()
    if direction in ("horizontal", "diagonal"):
        flipped[:, 0], flipped[:, 2] = width - bboxes[:, 2], width - bboxes[:, 0]
    if direction in ("vertical", "diagonal"):
        flipped[:, 1], flipped[:, 3] = height - bboxes[:, 3], height - bboxes[:, 1]
    return flipped


@PIPELINES.register_module()
class RandomFlip:
    """Flip with probability `flip_ratio` (numpy's global RNG). A `flip` key already in the results
    (MultiScaleFlipAug puts False there at test time) is obeyed and nothing is drawn."""

    def __init__(
        self,
        flip_ratio: Union[float, Sequence[float], None] = None,
        direction: Union[str, Sequence[str]] = "horizontal",
    ):
        self.directions = [direction] if isinstance(direction, str) else list(direction)
        for name in self.directions:
            if name not in _FLIP_AXES:
                raise ConfigValueError(f"flip direction must be one of {sorted(_FLIP_AXES)}, got '{name}'")
        if flip_ratio is None:
            ratios = [0.0] * len(self.directions)
        elif isinstance(flip_ratio, (int, float)):
            ratios = [float(flip_ratio) / len(self.directions)] * len(self.directions)
        else:
            ratios = [float(r) for r in flip_ratio]
        if len(ratios) != len(self.directions) or any(r < 0 for r in ratios) or sum(ratios) > 1:
            raise ConfigValueError(f"flip_ratio {flip_ratio!r} does not fit directions {self.directions}")
        self.flip_ratio = flip_ratio
        self.probabilities = ratios + [1.0 - sum(ratios)]

    def __call__(self, results: dict) -> dict:
        if "flip" not in results:
            choice = np.random.choice(len(self.probabilities), p=self.probabilities)
            direction: Optional[str] = self.directions[choice] if choice < len(self.directions) else None
            results["flip"] = direction is not None
            results["flip_direction"] = direction
        if results["flip"]:
            direction = results["flip_direction"]
            for key in results.get("img_fields", ["img"]):
                results[key] = np.ascontiguousarray(np.flip(results[key], axis=_FLIP_AXES[direction]))
            for key in results.get("bbox_fields", []):
                results[key] = flip_bboxes(results[key], results["img_shape"], direction)
            mask_axes = tuple(axis + 1 for axis in _FLIP_AXES[direction])  # masks are (N, H, W)
            for key in results.get("mask_fields", []):
                results[key] = np.ascontiguousarray(np.flip(results[key], axis=mask_axes))
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(flip_ratio={self.flip_ratio}, direction={self.directions})"


def normalize_image(img: np.ndarray, mean: np.ndarray, std: np.ndarray, to_rgb: bool) -> np.ndarray:
    """float32 copy, optional BGR->RGB, then OpenCV in-place `(x - mean) * (1 / std)` (mmcv's calls).

    The reciprocal is taken in float64 from the float32 std: a multiplication by a reciprocal, not a
    division. How OpenCV forms the product is its own business (OpenCV 5.0 multiplies in float64 and
    rounds to float32 once); using the same calls is what keeps pixels equal to mmcv's."""
    out = img.astype(np.float32)
    mean64 = np.float64(mean.reshape(1, -1))
    inv_std64 = 1 / np.float64(std.reshape(1, -1))
    if to_rgb:
        cv2.cvtColor(out, cv2.COLOR_BGR2RGB, out)
    cv2.subtract(out, mean64, out)
    cv2.multiply(out, inv_std64, out)
    return out


@PIPELINES.register_module()
class Normalize:
    """Normalise with per-channel mean/std given in the output (RGB when to_rgb) channel order."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_rgb: bool = True):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)
        if self.mean.shape != (3,) or self.std.shape != (3,):
            raise ConfigValueError(f"Normalize needs 3 mean and 3 std values, got mean={mean!r}, std={std!r}")
        self.to_rgb = to_rgb

    def __call__(self, results: dict) -> dict:
        for key in results.get("img_fields", ["img"]):
            results[key] = normalize_image(results[key], self.mean, self.std, self.to_rgb)
        results["img_norm_cfg"] = dict(mean=self.mean, std=self.std, to_rgb=self.to_rgb)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.tolist()}, std={self.std.tolist()}, to_rgb={self.to_rgb})"


@PIPELINES.register_module()
class Pad:
    """Pad bottom/right with `pad_val` to a fixed `size` (h, w) or to multiples of `size_divisor`.

    Masks (`mask_fields`) are padded to the image's padded size with `pad_val['masks']` (0 by default; a number
    `pad_val` pads images and masks alike, as mmdetection 2.28).
    """

    def __init__(
        self,
        size: Optional[tuple[int, int]] = None,
        size_divisor: Optional[int] = None,
        pad_val: Union[float, dict] = 0,
    ):
        if (size is None) == (size_divisor is None):
            raise ConfigValueError(
                f"Pad needs exactly one of size / size_divisor, got size={size}, size_divisor={size_divisor}"
            )
        self.size = size
        self.size_divisor = size_divisor
        self.pad_val = pad_val.get("img", 0) if isinstance(pad_val, dict) else pad_val
        self.mask_pad_val = pad_val.get("masks", 0) if isinstance(pad_val, dict) else pad_val

    def _target(self, height: int, width: int) -> tuple[int, int]:
        if self.size is not None:
            target_h, target_w = self.size
            if target_h < height or target_w < width:
                raise ConfigValueError(f"Pad size {self.size} is smaller than the image ({height}, {width})")
            return target_h, target_w
        divisor = self.size_divisor
        return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor

    def __call__(self, results: dict) -> dict:
        for key in results.get("img_fields", ["img"]):
            img = results[key]
            height, width = img.shape[:2]
            target_h, target_w = self._target(height, width)
            padded = np.full((target_h, target_w) + img.shape[2:], self.pad_val, dtype=img.dtype)
            padded[:height, :width] = img
            results[key] = padded
        results["pad_shape"] = results["img"].shape
        pad_h, pad_w = results["pad_shape"][:2]
        for key in results.get("mask_fields", []):
            masks = results[key]
            padded = np.full((masks.shape[0], pad_h, pad_w), self.mask_pad_val, dtype=masks.dtype)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            results[key] = padded
        results["pad_fixed_size"] = self.size
        results["pad_size_divisor"] = self.size_divisor
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, size_divisor={self.size_divisor}, pad_val={self.pad_val})"

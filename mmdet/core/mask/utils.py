"""Instance masks as plain arrays: COCO segmentations to bitmaps, and per-class result masks to COCO RLE."""

from collections.abc import Sequence
from typing import Union

import numpy as np
from pycocotools import mask as mask_api

MaskResult = Union[list, tuple]


def segmentation_to_bitmap(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` as a uint8 (height, width) array of 0/1.

    Accepts the three COCO forms: a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` (rasterised by pycocotools
    and united), an uncompressed RLE ``{'size': [h, w], 'counts': [int, ...]}`` and a compressed RLE (``counts`` a
    str or bytes). An empty polygon list gives an empty mask.
    """
    if isinstance(segmentation, (list, tuple)):
        if len(segmentation) == 0:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_api.merge(mask_api.frPyObjects([list(p) for p in segmentation], height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        if isinstance(segmentation["counts"], list):
            rle = mask_api.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
    else:
        raise ValueError(
            "a COCO segmentation must be a list of polygons or an RLE dict with 'counts' and 'size', "
            f"got {type(segmentation).__name__} {segmentation!r:.80}"
        )
    return mask_api.decode(rle)


def encode_mask(mask: np.ndarray) -> dict:
    """COCO RLE of one (H, W) binary mask: ``{'size': [H, W], 'counts': bytes}`` (pycocotools' encoding)."""
    array = np.asfortranarray(np.asarray(mask, dtype=np.uint8)[:, :, None])
    return mask_api.encode(array)[0]


def encode_mask_results(mask_results: MaskResult) -> MaskResult:
    """The per-class lists of (H, W) masks of one image with every mask RLE-encoded (as mmdetection's test loop
    stores them). A ``(masks, scores)`` tuple keeps its scores; masks already encoded stay as they are."""
    if isinstance(mask_results, tuple):
        masks, scores = mask_results
        return encode_mask_results(masks), scores
    return [[m if isinstance(m, dict) else encode_mask(m) for m in class_masks] for class_masks in mask_results]


def encode_results(results: Sequence) -> list:
    """Per-image detector results with the masks of ``(bbox, segm)`` entries RLE-encoded; box-only results as they
    are."""
    return [(result[0], encode_mask_results(result[1])) if is_mask_result(result) else result for result in results]


def is_mask_result(result) -> bool:
    """Whether one image's result is a mask detector's `(per-class boxes, per-class masks)` tuple rather than a
    box detector's list of per-class (k, 5) arrays."""
    return isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], (list, tuple))

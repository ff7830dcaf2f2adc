"""Image and annotation loading: OpenCV decode, BGR uint8 HWC."""

import os.path as osp
import warnings

import cv2
import numpy as np

from mmdet.core.mask import segmentation_to_bitmap
from mmdet.utils.errors import ConfigValueError, InputFileNotFoundError, UserError

from ..builder import PIPELINES
from ..verify import ImageFileError

_DECODE_FLAGS = {"color": cv2.IMREAD_COLOR, "grayscale": cv2.IMREAD_GRAYSCALE, "unchanged": cv2.IMREAD_UNCHANGED}


def _set_image(results: dict, img: np.ndarray, filename, ori_filename) -> dict:
    results["filename"] = filename
    results["ori_filename"] = ori_filename
    results["img"] = img
    results["img_shape"] = img.shape
    results["ori_shape"] = img.shape
    results["img_fields"] = ["img"]
    return results


def read_image(filename: str, color_type: str = "color") -> np.ndarray:
    """Decode an image file with `cv2.imdecode` (IMREAD_COLOR by default: 3 channels, BGR, uint8)."""
    if color_type not in _DECODE_FLAGS:
        raise ConfigValueError(f"color_type must be one of {sorted(_DECODE_FLAGS)}, got '{color_type}'")
    if not osp.isfile(filename):
        raise InputFileNotFoundError(f"image file not found: {filename}")
    buffer = np.fromfile(filename, dtype=np.uint8)
    img = cv2.imdecode(buffer, _DECODE_FLAGS[color_type])
    if img is None:
        raise ImageFileError(f"OpenCV could not decode the image file {filename}")
    return img


@PIPELINES.register_module()
class LoadImageFromFile:
    """Load `img_prefix/img_info['filename']`; `to_float32=False` keeps uint8 until Normalize."""

    def __init__(self, to_float32: bool = False, color_type: str = "color"):
        self.to_float32 = to_float32
        self.color_type = color_type

    def __call__(self, results: dict) -> dict:
        name = results["img_info"]["filename"]
        prefix = results.get("img_prefix")
        filename = osp.join(prefix, name) if prefix else name
        img = read_image(filename, self.color_type)
        if self.to_float32:
            img = img.astype(np.float32)
        return _set_image(results, img, filename, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(to_float32={self.to_float32}, color_type='{self.color_type}')"


@PIPELINES.register_module()
class LoadImageFromWebcam(LoadImageFromFile):
    """Take an already decoded image from `results['img']` (used by `inference_detector` for arrays)."""

    def __call__(self, results: dict) -> dict:
        img = results.get("img")
        if not isinstance(img, np.ndarray):
            raise TypeError(f"LoadImageFromWebcam expects results['img'] to be a numpy array, got {type(img).__name__}")
        if self.to_float32:
            img = img.astype(np.float32)
        return _set_image(results, img, None, None)


class AnnotationMaskError(UserError, ValueError):
    """An annotation that mask training needs has no usable `segmentation`."""


@PIPELINES.register_module()
class LoadAnnotations:
    """Copy boxes and labels from `results['ann_info']` (CocoDataset.get_ann_info) into the results.

    `with_mask=True` also rasterises each object's COCO `segmentation` (polygons, or RLE compressed or not) with
    pycocotools on the `img_info` height x width canvas: `gt_masks`, a uint8 (num_gts, H, W) array of 0/1 that the
    geometric transforms resize, flip and pad with the image.

    Masks are always bitmaps. `poly2mask=False` (mmdetection keeps polygons through the pipeline and cuts the mask
    targets out of them) is accepted so that such configs run, with a warning: the polygons are rasterised here as
    well, which changes the training targets slightly and nothing at test time.
    """

    def __init__(
        self, with_bbox: bool = True, with_label: bool = True, with_mask: bool = False, poly2mask: bool = True
    ):
        if with_mask and not poly2mask:
            warnings.warn(
                "LoadAnnotations(poly2mask=False): polygon masks are rasterised to bitmaps on loading, as with "
                "poly2mask=True; mask targets may differ slightly from mmdetection's polygon cropping",
                stacklevel=2,
            )
        self.with_bbox = with_bbox
        self.with_label = with_label
        self.with_mask = with_mask
        self.poly2mask = poly2mask

    def __call__(self, results: dict) -> dict:
        ann_info = results["ann_info"]
        if self.with_bbox:
            results["gt_bboxes"] = ann_info["bboxes"].copy()
            results.setdefault("bbox_fields", [])
            results["bbox_fields"].append("gt_bboxes")
            ignore = ann_info.get("bboxes_ignore")
            if ignore is not None:
                results["gt_bboxes_ignore"] = ignore.copy()
                results["bbox_fields"].append("gt_bboxes_ignore")
        if self.with_label:
            results["gt_labels"] = ann_info["labels"].copy()
        if self.with_mask:
            results["gt_masks"] = self._load_masks(results)
            results.setdefault("mask_fields", [])
            results["mask_fields"].append("gt_masks")
        return results

    @staticmethod
    def _load_masks(results: dict) -> np.ndarray:
        height, width = results["img_info"]["height"], results["img_info"]["width"]
        segmentations = results["ann_info"].get("masks")
        if segmentations is None:
            raise ConfigValueError(
                "LoadAnnotations(with_mask=True): the annotation info carries no 'masks' (the dataset does not parse "
                "segmentations)"
            )
        masks = np.zeros((len(segmentations), height, width), dtype=np.uint8)
        name = results["img_info"].get("filename", results["img_info"].get("id"))
        for i, segmentation in enumerate(segmentations):
            if segmentation is None:
                raise AnnotationMaskError(
                    f"LoadAnnotations(with_mask=True): an annotation of image {name} has no 'segmentation'; "
                    "mask training needs instance masks in the annotation file"
                )
            try:
                masks[i] = segmentation_to_bitmap(segmentation, height, width)
            except ValueError as err:
                raise AnnotationMaskError(f"LoadAnnotations(with_mask=True), image {name}: {err}") from err
        return masks

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(with_bbox={self.with_bbox}, with_label={self.with_label}, "
            f"with_mask={self.with_mask}, poly2mask={self.poly2mask})"
        )

"""Tiny COCO-format files on disk for the dataset, loader, evaluation and API tests."""

import json

import cv2
import numpy as np

CLASSES = ("cat", "dog", "bird")
# Non-contiguous ids, listed out of id order to check "json order" label assignment.
CATEGORIES = [dict(id=7, name="cat"), dict(id=2, name="dog"), dict(id=11, name="bird"), dict(id=5, name="fish")]
TRAIN_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="Resize", img_scale=(128, 96), keep_ratio=True),
    dict(type="RandomFlip", flip_ratio=0.5),
    dict(type="Normalize", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True),
    dict(type="Pad", size_divisor=32),
    dict(type="DefaultFormatBundle"),
    dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"]),
]
TEST_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(
        type="MultiScaleFlipAug",
        img_scale=(128, 96),
        flip=False,
        transforms=[
            dict(type="Resize", keep_ratio=True),
            dict(type="RandomFlip"),
            dict(type="Normalize", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True),
            dict(type="Pad", size_divisor=32),
            dict(type="ImageToTensor", keys=["img"]),
            dict(type="Collect", keys=["img"]),
        ],
    ),
]


def write_tiny_coco(root, images, annotations, categories=CATEGORIES, name="ann.json"):
    """Write images (id, file_name, width, height) as random PNGs under root/imgs and the json under root."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for img in images:
        pixels = rng.integers(0, 256, (img["height"], img["width"], 3), dtype=np.uint8)
        cv2.imwrite(str(root / "imgs" / img["file_name"]), pixels)
    ann_file = root / name
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return ann_file


def ann(ann_id, image_id, bbox, category_id, **extra):
    return dict(
        id=ann_id,
        image_id=image_id,
        bbox=bbox,
        category_id=category_id,
        area=extra.pop("area", bbox[2] * bbox[3]),
        iscrowd=extra.pop("iscrowd", 0),
        **extra,
    )

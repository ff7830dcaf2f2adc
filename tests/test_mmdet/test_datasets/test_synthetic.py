"""The synthetic COCO-format data set: deterministic bytes, valid COCO, sane boxes."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mmdet.datasets.synthetic import (
    SIDE_RANGE,
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_CLASSES,
    make_synthetic_coco,
    occludes_too_much,
    render_image,
    visible_boxes,
)

SPLITS = ("train2017", "val2017")


def _digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "coco"
    make_synthetic_coco(root, num_train=12, num_val=4, seed=3)
    return root


def test_same_seed_same_bytes(synthetic_root, tmp_path):
    again = tmp_path / "again"
    make_synthetic_coco(again, num_train=12, num_val=4, seed=3)
    assert _digest(again) == _digest(synthetic_root)
    assert len(_digest(again)) == 12 + 4 + 2


def test_other_seed_other_images(synthetic_root, tmp_path):
    other = tmp_path / "other"
    make_synthetic_coco(other, num_train=2, num_val=1, seed=4)
    first = "train2017/000000000001.jpg"
    assert (other / first).read_bytes() != (synthetic_root / first).read_bytes()


def test_prefix_does_not_depend_on_count(synthetic_root, tmp_path):
    fewer = tmp_path / "fewer"
    make_synthetic_coco(fewer, num_train=3, num_val=1, seed=3)
    for name in ("000000000001.jpg", "000000000003.jpg"):
        assert (fewer / "train2017" / name).read_bytes() == (synthetic_root / "train2017" / name).read_bytes()


@pytest.mark.parametrize("split", SPLITS)
def test_pycocotools_loads_it(synthetic_root, split):
    coco = COCO(str(synthetic_root / "annotations" / f"instances_{split}.json"))
    assert sorted(coco.getCatIds()) == [cid for cid, _ in SYNTHETIC_CATEGORIES]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SYNTHETIC_CLASSES)
    assert len(coco.getImgIds()) == (12 if split == "train2017" else 4)
    assert len(coco.getAnnIds()) > 0


def test_category_ids_are_not_contiguous():
    ids = [cid for cid, _ in SYNTHETIC_CATEGORIES]
    assert ids != list(range(1, len(ids) + 1))
    assert ids == sorted(set(ids))


@pytest.mark.parametrize("split", SPLITS)
def test_images_and_boxes_are_consistent(synthetic_root, split):
    coco = json.loads((synthetic_root / "annotations" / f"instances_{split}.json").read_text())
    sizes = {}
    for image in coco["images"]:
        pixels = cv2.imread(str(synthetic_root / split / image["file_name"]), cv2.IMREAD_COLOR)
        assert pixels.shape == (image["height"], image["width"], 3)
        assert SIDE_RANGE[0] <= image["width"] <= SIDE_RANGE[1] and SIDE_RANGE[0] <= image["height"] <= SIDE_RANGE[1]
        assert image["width"] != image["height"]
        sizes[image["id"]] = (image["width"], image["height"])
    per_image = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert w >= 1 and h >= 1 and ann["area"] == w * h
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
        assert ann["iscrowd"] == 0
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert all(1 <= n <= 8 for n in per_image.values())
    ann_ids = [ann["id"] for ann in coco["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)


def test_annotation_ids_unique_across_splits(synthetic_root):
    ids = []
    for split in SPLITS:
        coco = json.loads((synthetic_root / "annotations" / f"instances_{split}.json").read_text())
        ids += [ann["id"] for ann in coco["annotations"]]
    assert len(ids) == len(set(ids))


def test_boxes_are_tight_around_visible_pixels():
    owner = np.full((10, 12), -1, np.int32)
    owner[2:6, 3:9] = 0  # object 0: rows 2-5, columns 3-8
    owner[4:9, 7:11] = 1  # object 1 on top covers object 0's lower right corner
    assert visible_boxes(owner, 2) == [[3.0, 2.0, 6.0, 4.0], [7.0, 4.0, 4.0, 5.0]]
    owner[2:4, :] = 1  # now object 0's visible part is rows 4-5, columns 3-6
    assert visible_boxes(owner, 2)[0] == [3.0, 4.0, 4.0, 2.0]
    owner[owner == 0] = 1
    with pytest.raises(ValueError, match="object 0"):
        visible_boxes(owner, 2)


def test_occlusion_limit():
    owner = np.full((10, 10), -1, np.int32)
    owner[0:10, 0:5] = 0  # 50 pixels of object 0
    full_areas = [50]
    small_overlap = np.zeros((10, 10), bool)
    small_overlap[0:2, 3:8] = True  # hides 4 of its 50 pixels
    large_overlap = np.zeros((10, 10), bool)
    large_overlap[0:10, 1:8] = True  # hides 40 of them
    assert not occludes_too_much(small_overlap, owner, full_areas)
    assert occludes_too_much(large_overlap, owner, full_areas)


def test_rendered_objects_match_their_pixels():
    image, objects = render_image(320, 260, np.random.default_rng(11))
    assert image.shape == (260, 320, 3) and image.dtype == np.uint8
    assert 1 <= len(objects) <= 8
    for category_id, (x, y, w, h) in objects:
        assert category_id in {cid for cid, _ in SYNTHETIC_CATEGORIES}
        assert w >= 1 and h >= 1 and x + w <= 320 and y + h <= 260


def test_object_sizes_span_small_to_large(tmp_path):
    splits = make_synthetic_coco(tmp_path / "many", num_train=60, num_val=1, seed=0)
    sides = np.array([max(a["bbox"][2], a["bbox"][3]) for a in splits["train2017"]["annotations"]])
    categories = {a["category_id"] for a in splits["train2017"]["annotations"]}
    assert sides.min() < 16 and sides.max() > 120
    assert categories == {cid for cid, _ in SYNTHETIC_CATEGORIES}


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_counts_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="num_train"):
        make_synthetic_coco(tmp_path, num_train=bad, num_val=1)


def test_command_line(tmp_path, repo_root):
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "tools/make_synthetic_coco.py", str(out), "--num-train", "2", "--num-val", "1", "--seed", "5"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "train2017: 2 images" in result.stdout
    assert len(list((out / "train2017").glob("*.jpg"))) == 2
    assert len(list((out / "val2017").glob("*.jpg"))) == 1

"""COCO json conversion and pycocotools evaluation through CocoDataset.evaluate."""

import json

import numpy as np
import pytest

from helpers.coco_files import CLASSES, TEST_PIPELINE, ann, write_tiny_coco
from mmdet.datasets import CocoDataset


@pytest.fixture
def eval_dataset(tmp_path):
    # Large boxes (area > 96^2) so only the 'large' bucket has ground truth.
    images = [
        dict(id=21, file_name="a.png", width=300, height=200),
        dict(id=8, file_name="b.png", width=200, height=300),
    ]
    anns = [ann(1, 21, [0, 0, 100, 100], 7), ann(2, 21, [150, 50, 120, 120], 11), ann(3, 8, [10, 10, 150, 200], 2)]
    write_tiny_coco(tmp_path, images, anns)
    return CocoDataset(str(tmp_path / "ann.json"), TEST_PIPELINE, classes=CLASSES, test_mode=True)


def _empty():
    return [np.zeros((0, 5), np.float32) for _ in CLASSES]


def _perfect():
    a, b = _empty(), _empty()
    a[0] = np.array([[0, 0, 100, 100, 0.9]], np.float32)
    a[2] = np.array([[150, 50, 270, 170, 0.8]], np.float32)
    b[1] = np.array([[10, 10, 160, 210, 0.7]], np.float32)
    return [a, b]


def test_results2json_uses_xywh_and_coco_category_ids(eval_dataset, tmp_path):
    files = eval_dataset.results2json(_perfect(), str(tmp_path / "out"))
    assert files["bbox"] == files["proposal"] == str(tmp_path / "out.bbox.json")
    records = json.loads((tmp_path / "out.bbox.json").read_text())
    assert records[0] == dict(image_id=21, bbox=[0.0, 0.0, 100.0, 100.0], score=pytest.approx(0.9), category_id=7)
    assert [(r["image_id"], r["category_id"]) for r in records] == [(21, 7), (21, 11), (8, 2)]
    assert records[1]["bbox"] == [150.0, 50.0, 120.0, 120.0]
    assert set(records[0]) == {"image_id", "bbox", "score", "category_id"}


def test_perfect_detections_give_map_one(eval_dataset):
    metrics = eval_dataset.evaluate(_perfect(), logger="silent")
    assert list(metrics) == [
        "bbox_mAP",
        "bbox_mAP_50",
        "bbox_mAP_75",
        "bbox_mAP_s",
        "bbox_mAP_m",
        "bbox_mAP_l",
        "bbox_mAP_copypaste",
    ]
    assert metrics["bbox_mAP"] == metrics["bbox_mAP_50"] == metrics["bbox_mAP_l"] == 1.0
    assert metrics["bbox_mAP_s"] == metrics["bbox_mAP_m"] == -1.0  # no small/medium ground truth
    assert metrics["bbox_mAP_copypaste"] == "1.0000 1.0000 1.0000 -1.0000 -1.0000 1.0000"


def test_known_case(eval_dataset):
    results = _perfect()
    # cat: a box with IoU 0.62 only -> matched at IoU thresholds 0.50, 0.55, 0.60 -> AP 3/10.
    results[0][0] = np.array([[0, 0, 100, 62, 0.9]], np.float32)
    # bird: missed; a non-overlapping false positive instead -> AP 0.  dog: perfect -> AP 1.
    results[0][2] = np.array([[0, 150, 40, 190, 0.8]], np.float32)
    metrics = eval_dataset.evaluate(results, logger="silent")
    assert metrics["bbox_mAP"] == round((0.3 + 0.0 + 1.0) / 3, 4)
    assert metrics["bbox_mAP_50"] == round(2 / 3, 4)
    assert metrics["bbox_mAP_75"] == round(1 / 3, 4)


def test_half_recall_gives_51_of_101_recall_points(tmp_path):
    images = [dict(id=1, file_name="a.png", width=300, height=200)]
    anns = [ann(1, 1, [0, 0, 100, 100], 7), ann(2, 1, [150, 50, 120, 120], 7)]
    write_tiny_coco(tmp_path, images, anns, categories=[dict(id=7, name="cat")])
    ds = CocoDataset(str(tmp_path / "ann.json"), TEST_PIPELINE, classes=("cat",), test_mode=True)
    # One exact hit, then a false positive; the second object is never found: precision 1 up to recall 0.5.
    dets = np.array([[0, 0, 100, 100, 0.9], [0, 150, 40, 190, 0.8]], np.float32)
    metrics = ds.evaluate([[dets]], logger="silent", metric_items=["mAP", "AR@100"])
    assert metrics["bbox_mAP"] == round(51 / 101, 4)
    assert metrics["bbox_AR@100"] == 0.5


def test_classwise_and_jsonfile_prefix(eval_dataset, tmp_path, capsys):
    eval_dataset.evaluate(_perfect(), jsonfile_prefix=str(tmp_path / "keep"), classwise=True)
    assert (tmp_path / "keep.bbox.json").is_file()
    printed = capsys.readouterr().out
    assert "Average Precision" in printed and "bird" in printed


def test_result_errors(eval_dataset):
    with pytest.raises(ValueError, match="1 entries but the dataset .* has 2 images"):
        eval_dataset.evaluate(_perfect()[:1], logger="silent")
    with pytest.raises(ValueError, match="list of 3 per-class"):
        eval_dataset.evaluate([[np.zeros((0, 5))], _empty()], logger="silent")
    with pytest.raises(KeyError, match="segm"):
        eval_dataset.evaluate(_perfect(), metric="segm", logger="silent")


def test_no_detection_at_all_gives_zeros(eval_dataset):
    metrics = eval_dataset.evaluate([_empty(), _empty()], logger="silent")
    assert metrics["bbox_mAP"] == 0.0 and metrics["bbox_mAP_copypaste"] == "0.0000 0.0000 0.0000 0.0000 0.0000 0.0000"


def test_proposal_metric_ignores_categories(eval_dataset):
    results = _perfect()
    results[0][0], results[0][1] = results[0][1], results[0][0]  # right box, wrong class
    metrics = eval_dataset.evaluate(results, metric="proposal", logger="silent")
    assert metrics["proposal_AR@100"] == 1.0
    assert "bbox_mAP" not in metrics

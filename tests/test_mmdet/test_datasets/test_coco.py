"""CocoDataset: json parsing, filtering rules, class/category mapping, errors naming the file."""

import numpy as np
import pytest

from helpers.coco_files import CLASSES, TEST_PIPELINE, TRAIN_PIPELINE, ann, write_tiny_coco
from mmdet.datasets import CocoDataset, build_dataset


@pytest.fixture
def tiny_coco(tmp_path):
    images = [
        dict(id=10, file_name="a.png", width=80, height=60),  # normal boxes + crowd + ignored + zero-area
        dict(id=3, file_name="b.png", width=40, height=64),  # only a crowd box (survives, zero gt after parsing)
        dict(id=4, file_name="c.png", width=50, height=50),  # no annotation -> filtered in training
        dict(id=5, file_name="d.png", width=70, height=20),  # too small (min side < 32) -> filtered
        dict(id=6, file_name="e.png", width=60, height=60),  # only a category outside the classes -> filtered
    ]
    annotations = [
        ann(1, 10, [10, 5, 20, 30], 7),
        ann(2, 10, [40, 10, 30.5, 40], 11),
        ann(3, 10, [0, 0, 30, 30], 2, iscrowd=1),
        ann(4, 10, [5, 5, 10, 10], 7, ignore=True),
        ann(5, 10, [5, 5, 0.5, 10], 7),  # w < 1
        ann(6, 10, [5, 5, 10, 10], 7, area=0),  # area 0
        ann(7, 10, [90, 70, 10, 10], 7),  # outside the image
        ann(8, 10, [1, 1, 10, 10], 5),  # 'fish' is not a dataset class
        ann(9, 3, [1, 1, 10, 10], 2, iscrowd=1),
        ann(10, 5, [1, 1, 10, 10], 2),
        ann(11, 6, [1, 1, 10, 10], 5),
    ]
    ann_file = write_tiny_coco(tmp_path, images, annotations)
    return tmp_path, ann_file


def test_labels_follow_json_category_order(tiny_coco):
    root, ann_file = tiny_coco
    ds = CocoDataset(str(ann_file), TEST_PIPELINE, classes=CLASSES, img_prefix=str(root / "imgs"), test_mode=True)
    assert ds.cat_ids == [7, 2, 11]
    assert ds.cat2label == {7: 0, 2: 1, 11: 2}
    assert ds.img_ids == [10, 3, 4, 5, 6]
    assert len(ds) == 5  # test mode: no filtering


def test_parsing_rules(tiny_coco):
    root, ann_file = tiny_coco
    ds = CocoDataset(str(ann_file), TRAIN_PIPELINE, classes=CLASSES, img_prefix=str(root / "imgs"))
    info = ds.get_ann_info(0)
    np.testing.assert_array_equal(info["bboxes"], np.array([[10, 5, 30, 35], [40, 10, 70.5, 50]], np.float32))
    assert info["bboxes"].dtype == np.float32
    np.testing.assert_array_equal(info["labels"], np.array([0, 2]))
    assert info["labels"].dtype == np.int64
    np.testing.assert_array_equal(info["bboxes_ignore"], np.array([[0, 0, 30, 30]], np.float32))
    crowd_only = ds.get_ann_info(1)
    assert crowd_only["bboxes"].shape == (0, 4) and crowd_only["labels"].shape == (0,)


def test_training_filter_and_group_flag(tiny_coco):
    root, ann_file = tiny_coco
    ds = CocoDataset(str(ann_file), TRAIN_PIPELINE, classes=CLASSES, img_prefix=str(root / "imgs"))
    assert ds.img_ids == [10, 3]
    assert [info["file_name"] for info in ds.data_infos] == ["a.png", "b.png"]
    np.testing.assert_array_equal(ds.flag, np.array([1, 0], np.uint8))
    keep_empty = CocoDataset(
        str(ann_file), TRAIN_PIPELINE, classes=CLASSES, img_prefix=str(root / "imgs"), filter_empty_gt=False
    )
    assert keep_empty.img_ids == [10, 3, 4, 6]  # the 20-pixel-high image still goes


def test_train_sample_format(tiny_coco):
    root, ann_file = tiny_coco
    ds = CocoDataset(str(ann_file), TRAIN_PIPELINE, classes=CLASSES, img_prefix=str(root / "imgs"))
    sample = ds[0]
    assert set(sample) == {"img", "img_metas", "gt_bboxes", "gt_labels"}
    assert sample["img"].shape == (3, 96, 128)
    assert sample["gt_bboxes"].shape == (2, 4) and sample["gt_labels"].tolist() == [0, 2]
    assert sample["img_metas"]["img_shape"] == (96, 128, 3)
    assert sample["img_metas"]["ori_shape"] == (60, 80, 3)


def test_data_root_is_joined_and_config_build(tiny_coco):
    root, _ = tiny_coco
    ds = build_dataset(
        dict(
            type="CocoDataset",
            data_root=str(root),
            ann_file="ann.json",
            img_prefix="imgs",
            classes=CLASSES,
            pipeline=TEST_PIPELINE,
            test_mode=True,
        )
    )
    assert ds.ann_file == str(root / "ann.json") and ds.img_prefix == str(root / "imgs")
    assert ds[0]["img_metas"]["filename"] == str(root / "imgs" / "a.png")


def test_default_classes_are_coco(tmp_path):
    cats = [dict(id=i + 1, name=name) for i, name in enumerate(CocoDataset.CLASSES)]
    ann_file = write_tiny_coco(tmp_path, [dict(id=1, file_name="a.png", width=40, height=40)], [], categories=cats)
    ds = CocoDataset(str(ann_file), TEST_PIPELINE, test_mode=True)
    assert len(ds.CLASSES) == 80 and ds.CLASSES[0] == "person" and ds.CLASSES[79] == "toothbrush"
    assert ds.cat_ids == list(range(1, 81))


def test_missing_image_names_the_file(tiny_coco):
    root, ann_file = tiny_coco
    (root / "imgs" / "a.png").unlink()
    ds = CocoDataset(str(ann_file), TEST_PIPELINE, classes=CLASSES, img_prefix=str(root / "imgs"), test_mode=True)
    with pytest.raises(FileNotFoundError, match="a.png"):
        ds[0]


@pytest.mark.parametrize(
    "bad_ann, message",
    [
        (dict(id=1, image_id=1, bbox=[1, 2, 3], category_id=7, area=1), "'bbox' must be 4 numbers"),
        (dict(id=1, image_id=99, bbox=[1, 2, 3, 4], category_id=7, area=1), "unknown image id 99"),
        (dict(id=1, image_id=1, bbox=[1, 2, 3, 4], area=1), "lacks 'category_id'"),
    ],
)
def test_malformed_annotation_names_the_file(tmp_path, bad_ann, message):
    ann_file = write_tiny_coco(
        tmp_path, [dict(id=1, file_name="a.png", width=40, height=40)], [bad_ann], name="broken.json"
    )
    with pytest.raises(ValueError, match=message) as info:
        CocoDataset(str(ann_file), TEST_PIPELINE, classes=CLASSES, test_mode=True)
    assert "broken.json" in str(info.value)


def test_missing_class_and_missing_file_errors(tiny_coco, tmp_path):
    _, ann_file = tiny_coco
    with pytest.raises(ValueError, match="zebra"):
        CocoDataset(str(ann_file), TEST_PIPELINE, classes=("cat", "zebra"), test_mode=True)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        CocoDataset(str(tmp_path / "nowhere.json"), TEST_PIPELINE, test_mode=True)

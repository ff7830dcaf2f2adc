"""Instance masks on the data side: COCO polygons and RLE, the mask pipeline, COCO 'segm' evaluation, the gathered
test results, and the synthetic data set's masks (its images and boxes unchanged by them)."""

import contextlib
import hashlib
import io
import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from pycocotools import mask as mask_api
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

import mmdet.datasets.synthetic as synthetic
from helpers.coco_files import CLASSES, TEST_PIPELINE, ann, write_tiny_coco
from mmdet.apis import multi_gpu_test, single_gpu_test
from mmdet.core.mask import encode_mask, encode_mask_results, segmentation_to_bitmap
from mmdet.datasets import CocoDataset, build_dataloader, build_dataset
from mmdet.datasets.coco import AnnotationFileError
from mmdet.datasets.collate import collate
from mmdet.datasets.pipelines import Collect, DefaultFormatBundle, LoadAnnotations, Pad, RandomFlip, Resize
from mmdet.datasets.pipelines.loading import AnnotationMaskError

# pycocotools' mask decoding trips numpy 2's __array__ copy-keyword deprecation inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
MASK_TRAIN_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="Resize", img_scale=(128, 96), keep_ratio=True),
    dict(type="RandomFlip", flip_ratio=0.5),
    dict(type="Normalize", mean=MEAN, std=STD, to_rgb=True),
    dict(type="Pad", size_divisor=32),
    dict(type="DefaultFormatBundle"),
    dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels", "gt_masks"]),
]


def _rect_polygon(x1, y1, x2, y2) -> list:
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def _box_mask(height, width, x1, y1, x2, y2) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


# ----------------------------------------------------------------------------------------------- COCO forms
def test_polygons_and_rle_become_the_same_bitmap():
    expected = _box_mask(30, 40, 5, 6, 25, 16)
    rle = mask_api.encode(np.asfortranarray(expected))
    uncompressed = dict(size=[30, 40], counts=[])
    flat = expected.flatten(order="F")
    run_value, run = 0, 0
    for value in flat:  # COCO's uncompressed RLE: alternating run lengths, starting with zeros
        if value == run_value:
            run += 1
        else:
            uncompressed["counts"].append(run)
            run_value, run = value, 1
    uncompressed["counts"].append(run)
    for segmentation in (
        _rect_polygon(5, 6, 25, 16),
        uncompressed,
        rle,
        dict(size=rle["size"], counts=rle["counts"].decode()),
    ):
        bitmap = segmentation_to_bitmap(segmentation, 30, 40)
        assert bitmap.dtype == np.uint8
        np.testing.assert_array_equal(bitmap, expected)
    # Two polygons are united.
    two = segmentation_to_bitmap(_rect_polygon(0, 0, 4, 4) + _rect_polygon(10, 10, 12, 20), 30, 40)
    assert two.sum() == 16 + 20
    assert segmentation_to_bitmap([], 30, 40).sum() == 0
    with pytest.raises(ValueError, match="polygons or an RLE"):
        segmentation_to_bitmap("not a mask", 30, 40)


def test_encode_mask_results_is_pycocotools_rle():
    masks = [[_box_mask(20, 30, 1, 2, 9, 12).astype(bool)], [], [np.zeros((20, 30), bool)]]
    encoded = encode_mask_results(masks)
    assert [len(c) for c in encoded] == [1, 0, 1]
    assert encoded[0][0]["size"] == [20, 30] and isinstance(encoded[0][0]["counts"], bytes)
    np.testing.assert_array_equal(mask_api.decode(encoded[0][0]), masks[0][0])
    scores = [[0.5], [], [0.1]]
    again, kept = encode_mask_results((encoded, scores))
    assert again == encoded and kept is scores


# ----------------------------------------------------------------------------------------------- loading
@pytest.fixture
def mask_coco(tmp_path):
    images = [dict(id=5, file_name="a.png", width=64, height=48), dict(id=6, file_name="b.png", width=48, height=64)]
    rle = mask_api.encode(np.asfortranarray(_box_mask(64, 48, 4, 20, 30, 50)))
    rle["counts"] = rle["counts"].decode()
    anns = [
        ann(1, 5, [10, 8, 20, 12], 7, segmentation=_rect_polygon(10, 8, 30, 20)),
        ann(2, 5, [0, 0, 64, 48], 2, iscrowd=1, segmentation=_rect_polygon(0, 0, 64, 48)),
        ann(3, 5, [40, 30, 0.5, 10], 11, segmentation=_rect_polygon(40, 30, 40.5, 40)),  # too thin: dropped
        ann(4, 5, [36, 24, 20, 16], 11, segmentation=_rect_polygon(36, 24, 56, 40)),
        ann(5, 6, [4, 20, 26, 30], 2, segmentation=rle),
    ]
    write_tiny_coco(tmp_path, images, anns)
    return tmp_path


def test_dataset_keeps_one_segmentation_per_kept_box(mask_coco):
    dataset = CocoDataset(str(mask_coco / "ann.json"), [], classes=CLASSES, img_prefix=str(mask_coco / "imgs"))
    info = dataset.get_ann_info(0)
    assert info["bboxes"].tolist() == [[10, 8, 30, 20], [36, 24, 56, 40]]
    assert info["masks"] == [_rect_polygon(10, 8, 30, 20), _rect_polygon(36, 24, 56, 40)]  # crowd and thin left out
    assert isinstance(dataset.get_ann_info(1)["masks"][0]["counts"], str)


def test_load_annotations_rasterises_on_the_image_canvas(mask_coco):
    dataset = CocoDataset(str(mask_coco / "ann.json"), [], classes=CLASSES, img_prefix=str(mask_coco / "imgs"))
    load = LoadAnnotations(with_bbox=True, with_mask=True)
    results = load(dataset.pre_pipeline(dict(img_info=dataset.data_infos[0], ann_info=dataset.get_ann_info(0))))
    masks = results["gt_masks"]
    assert masks.shape == (2, 48, 64) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[0], _box_mask(48, 64, 10, 8, 30, 20))
    np.testing.assert_array_equal(masks[1], _box_mask(48, 64, 36, 24, 56, 40))
    assert results["mask_fields"] == ["gt_masks"]
    second = load(dataset.pre_pipeline(dict(img_info=dataset.data_infos[1], ann_info=dataset.get_ann_info(1))))
    np.testing.assert_array_equal(second["gt_masks"][0], _box_mask(64, 48, 4, 20, 30, 50))
    assert "with_mask=True" in repr(load)
    with pytest.warns(UserWarning, match="poly2mask=False"):
        as_polygons = LoadAnnotations(with_mask=True, poly2mask=False)
    info = dataset.get_ann_info(0)
    rasterised = as_polygons(dataset.pre_pipeline(dict(img_info=dataset.data_infos[0], ann_info=info)))
    np.testing.assert_array_equal(rasterised["gt_masks"], masks)
    info = dataset.get_ann_info(0)
    info["masks"][1] = None
    with pytest.raises(AnnotationMaskError, match="no 'segmentation'"):
        load(dataset.pre_pipeline(dict(img_info=dataset.data_infos[0], ann_info=info)))


def test_train_pipeline_keeps_masks_on_their_boxes(mask_coco):
    dataset = CocoDataset(
        str(mask_coco / "ann.json"), MASK_TRAIN_PIPELINE, classes=CLASSES, img_prefix=str(mask_coco / "imgs")
    )
    flips = set()
    for seed in range(6):
        np.random.seed(seed)
        for index in range(len(dataset)):
            sample = dataset[index]
            masks, boxes = sample["gt_masks"], sample["gt_bboxes"]
            meta = sample["img_metas"]
            flips.add(meta["flip"])
            assert masks.dtype == torch.uint8 and masks.shape == (len(boxes),) + tuple(sample["img"].shape[1:])
            assert tuple(masks.shape[1:]) == meta["pad_shape"][:2]
            for mask, box in zip(masks.numpy(), boxes.numpy()):
                rows, cols = np.nonzero(mask)
                tight = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
                np.testing.assert_allclose(tight, box, atol=1.0)  # nearest-neighbour resize: within a pixel
                assert mask[meta["img_shape"][0] :].sum() == 0 and mask[:, meta["img_shape"][1] :].sum() == 0
    assert flips == {True, False}
    batch = collate([dataset[0], dataset[1]])
    assert isinstance(batch["gt_masks"], list) and len(batch["gt_masks"]) == 2


def _mask_results(height=40, width=60) -> dict:
    masks = np.zeros((2, height, width), dtype=np.uint8)
    masks[0, 5:20, 10:40] = 1
    masks[1, 22:38, 2:9] = 1
    masks[1, 30, 50] = 1
    return dict(
        img=np.zeros((height, width, 3), np.uint8),
        img_shape=(height, width, 3),
        img_fields=["img"],
        gt_bboxes=np.array([[10, 5, 40, 20], [2, 22, 51, 38]], np.float32),
        bbox_fields=["gt_bboxes"],
        gt_masks=masks,
        mask_fields=["gt_masks"],
    )


@pytest.mark.parametrize("keep_ratio", [True, False])
def test_resize_masks_nearest_to_the_image_size(keep_ratio):
    results = _mask_results()
    original = results["gt_masks"].copy()
    results = Resize(img_scale=(150, 100), keep_ratio=keep_ratio)(results)
    height, width = results["img_shape"][:2]
    assert (width, height) == ((150, 100) if keep_ratio else (150, 100))  # 60 x 40 scales by 2.5 either way
    masks = results["gt_masks"]
    assert masks.shape == (2, height, width) and masks.dtype == np.uint8
    for mask, before in zip(masks, original):
        np.testing.assert_array_equal(mask, cv2.resize(before, (width, height), interpolation=cv2.INTER_NEAREST))
    squeezed = Resize(img_scale=(90, 30), keep_ratio=False)(_mask_results())
    assert squeezed["gt_masks"].shape == (2, 30, 90) and squeezed["img_shape"][:2] == (30, 90)


@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_flip_masks_with_the_image(direction):
    results = _mask_results()
    original = results["gt_masks"].copy()
    results = RandomFlip(flip_ratio=1.0, direction=direction)(results)
    axes = {"horizontal": (2,), "vertical": (1,), "diagonal": (1, 2)}[direction]
    np.testing.assert_array_equal(results["gt_masks"], np.flip(original, axis=axes))
    assert results["gt_masks"].flags["C_CONTIGUOUS"]
    rows, cols = np.nonzero(results["gt_masks"][0])
    np.testing.assert_array_equal([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], results["gt_bboxes"][0])


def test_pad_masks_to_the_padded_image():
    results = Pad(size_divisor=32)(_mask_results())
    assert results["gt_masks"].shape == (2, 64, 64) and results["pad_shape"][:2] == (64, 64)
    np.testing.assert_array_equal(results["gt_masks"][:, :40, :60], _mask_results()["gt_masks"])
    assert results["gt_masks"][:, 40:].sum() == 0 and results["gt_masks"][:, :, 60:].sum() == 0
    custom = Pad(size=(48, 64), pad_val=dict(img=0, masks=7))(_mask_results())
    assert custom["gt_masks"].shape == (2, 48, 64) and (custom["gt_masks"][:, 40:] == 7).all()
    scalar = Pad(size=(48, 64), pad_val=3)(_mask_results())
    assert (scalar["gt_masks"][:, :, 60:] == 3).all() and (scalar["img"][40:] == 3).all()


def test_format_bundle_and_collect_carry_gt_masks():
    results = DefaultFormatBundle()(_mask_results())
    assert results["gt_masks"].dtype == torch.uint8 and results["gt_masks"].shape == (2, 40, 60)
    data = Collect(keys=["img", "gt_bboxes", "gt_masks"], meta_keys=["img_shape"])(results)
    assert set(data) == {"img_metas", "img", "gt_bboxes", "gt_masks"}


# ----------------------------------------------------------------------------------------------- evaluation
@pytest.fixture
def segm_dataset(tmp_path):
    images = [dict(id=21, file_name="a.png", width=60, height=40), dict(id=8, file_name="b.png", width=50, height=70)]
    circle = np.zeros((70, 50), np.uint8)
    cv2.circle(circle, (25, 35), 18, 1, -1)
    rle = mask_api.encode(np.asfortranarray(circle))
    rle["counts"] = rle["counts"].decode()
    anns = [
        ann(1, 21, [5, 5, 20, 20], 7, segmentation=[[5, 5, 25, 5, 25, 25, 5, 25]]),
        ann(2, 21, [30, 10, 25, 25], 2, segmentation=[[30, 10, 55, 35, 30, 35]]),  # a triangle
        ann(3, 8, [7, 17, 36, 36], 11, segmentation=rle),
    ]
    write_tiny_coco(tmp_path, images, anns)
    return CocoDataset(str(tmp_path / "ann.json"), TEST_PIPELINE, classes=CLASSES, test_mode=True)


def _gt_bitmaps(dataset):
    return {a["id"]: dataset.coco.annToMask(a).astype(bool) for a in dataset.coco.dataset["annotations"]}


def _perfect_segm(dataset):
    gts = _gt_bitmaps(dataset)
    empty = np.zeros((0, 5), np.float32)
    a_boxes, a_masks = [empty] * 3, [[], [], []]
    a_boxes = [np.array([[5, 5, 25, 25, 0.9]], np.float32), np.array([[30, 10, 55, 35, 0.8]], np.float32), empty]
    a_masks = [[gts[1]], [gts[2]], []]
    b_boxes = [empty, empty, np.array([[7, 17, 43, 53, 0.7]], np.float32)]
    b_masks = [[], [], [gts[3]]]
    return [(a_boxes, a_masks), (b_boxes, b_masks)]


def _imperfect_segm(dataset):
    gts = _gt_bitmaps(dataset)
    (a_boxes, a_masks), (b_boxes, b_masks) = _perfect_segm(dataset)
    shifted = np.roll(gts[1], 3, axis=1)  # IoU 17/23
    eroded = cv2.erode(gts[3].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    false_positive = np.zeros((40, 60), bool)
    false_positive[30:38, 0:10] = True
    a_boxes = [np.array([[5, 5, 25, 25, 0.9], [0, 30, 10, 38, 0.95]], np.float32), a_boxes[1], a_boxes[2]]
    a_masks = [[shifted, false_positive], a_masks[1], []]
    b_masks = [[], [], [eroded]]
    return [(a_boxes, a_masks), (b_boxes, b_masks)]


def _pycocotools_segm_stats(dataset, results) -> np.ndarray:
    """The COCO segm stats of `results` straight from pycocotools, set up as mmdetection does."""
    detections = []
    for img_id, (boxes, masks) in zip(dataset.img_ids, results):
        for label, (class_boxes, class_masks) in enumerate(zip(boxes, masks)):
            for box, mask in zip(class_boxes, class_masks):
                rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
                detections.append(
                    dict(image_id=img_id, category_id=dataset.cat_ids[label], segmentation=rle, score=float(box[4]))
                )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(dataset.coco, dataset.coco.loadRes(detections), "segm")
        coco_eval.params.catIds = dataset.cat_ids
        coco_eval.params.imgIds = dataset.img_ids
        coco_eval.params.maxDets = [100, 300, 1000]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_check_metrics_accepts_segm():
    assert CocoDataset.check_metrics(["bbox", "segm"]) == ["bbox", "segm"]
    with pytest.raises(KeyError, match="did you mean 'segm'"):
        CocoDataset.check_metrics("segn")


def test_segm_json_records(segm_dataset, tmp_path):
    results = [(boxes, encode_mask_results(masks)) for boxes, masks in _perfect_segm(segm_dataset)]
    files = segm_dataset.results2json(results, str(tmp_path / "out"))
    assert files == {
        "bbox": str(tmp_path / "out.bbox.json"),
        "proposal": str(tmp_path / "out.bbox.json"),
        "segm": str(tmp_path / "out.segm.json"),
    }
    records = json.loads((tmp_path / "out.segm.json").read_text())
    boxes = json.loads((tmp_path / "out.bbox.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in records] == [(21, 7), (21, 2), (8, 11)]
    assert [r["bbox"] for r in records] == [b["bbox"] for b in boxes]
    assert records[0]["score"] == pytest.approx(0.9) and records[0]["bbox"] == [5.0, 5.0, 20.0, 20.0]
    assert isinstance(records[0]["segmentation"]["counts"], str) and records[0]["segmentation"]["size"] == [40, 60]


def test_perfect_masks_give_segm_map_one(segm_dataset):
    metrics = segm_dataset.evaluate(_perfect_segm(segm_dataset), metric=["bbox", "segm"], logger="silent")
    assert list(metrics)[7:] == [
        "segm_mAP",
        "segm_mAP_50",
        "segm_mAP_75",
        "segm_mAP_s",
        "segm_mAP_m",
        "segm_mAP_l",
        "segm_mAP_copypaste",
    ]
    assert metrics["segm_mAP"] == metrics["segm_mAP_50"] == metrics["bbox_mAP"] == 1.0


def test_segm_metrics_equal_pycocotools(segm_dataset):
    results = _imperfect_segm(segm_dataset)
    expected = _pycocotools_segm_stats(segm_dataset, results)
    assert 0 < expected[0] < 1
    raw = segm_dataset.evaluate(results, metric="segm", logger="silent")
    encoded = segm_dataset.evaluate(
        [(boxes, encode_mask_results(masks)) for boxes, masks in results],
        metric="segm",
        logger="silent",
        classwise=True,
    )
    assert raw == encoded
    names = ["segm_mAP", "segm_mAP_50", "segm_mAP_75", "segm_mAP_s", "segm_mAP_m", "segm_mAP_l"]
    assert [raw[name] for name in names] == [round(float(v), 4) for v in expected[:6]]
    assert raw["segm_mAP_copypaste"] == " ".join(f"{v:.4f}" for v in expected[:6])


def test_segm_needs_masks_in_results_and_ground_truth(segm_dataset, tmp_path):
    boxes_only = [boxes for boxes, _ in _perfect_segm(segm_dataset)]
    with pytest.raises(KeyError, match="needs mask results"):
        segm_dataset.evaluate(boxes_only, metric="segm", logger="silent")
    assert segm_dataset.evaluate(boxes_only, metric="bbox", logger="silent")["bbox_mAP"] == 1.0
    images = [dict(id=1, file_name="a.png", width=60, height=40)]
    write_tiny_coco(tmp_path, images, [ann(1, 1, [5, 5, 20, 20], 7)], name="boxes.json")
    no_masks = CocoDataset(str(tmp_path / "boxes.json"), TEST_PIPELINE, classes=CLASSES, test_mode=True)
    mask = np.zeros((40, 60), bool)
    result = [([np.array([[5, 5, 25, 25, 0.9]], np.float32), np.zeros((0, 5)), np.zeros((0, 5))], [[mask], [], []])]
    with pytest.raises(AnnotationFileError, match="segmentation"):
        no_masks.evaluate(result, metric="segm", logger="silent")
    with pytest.raises(ValueError, match="mix"):
        segm_dataset.evaluate([boxes_only[0], _perfect_segm(segm_dataset)[1]], metric="bbox", logger="silent")
    with pytest.raises(ValueError, match="lists of k masks"):
        segm_dataset.evaluate([(boxes, [[], [], []]) for boxes in boxes_only], metric="segm", logger="silent")


# ----------------------------------------------------------------------------------------------- test loop and gather
NUM_IMAGES = 5


class FakeMaskDetector(nn.Module):
    """Per image one detection of class (index % 3) and its box-shaped bool mask on the original image."""

    def forward(self, img, img_metas, return_loss=True, rescale=False):
        assert not return_loss and rescale
        return [_mask_detection(int(meta["ori_filename"].split(".")[0]), meta["ori_shape"]) for meta in img_metas]


def _mask_detection(index: int, ori_shape) -> tuple:
    boxes = [np.zeros((0, 5), np.float32) for _ in CLASSES]
    masks = [[] for _ in CLASSES]
    shift = 3 * index
    boxes[index % 3] = np.array([[5 + shift, 5, 45 + shift, 40, 0.9 - 0.1 * index]], np.float32)
    masks[index % 3] = [_box_mask(ori_shape[0], ori_shape[1], 5 + shift, 5, 45 + shift, 40).astype(bool)]
    return boxes, masks


@pytest.fixture
def gather_root(tmp_path):
    cat_ids = [7, 2, 11]
    images = [dict(id=100 - i, file_name=f"{i}.png", width=64, height=48) for i in range(NUM_IMAGES)]
    anns = [
        ann(i + 1, 100 - i, [5, 5, 40, 35], cat_ids[i % 3], segmentation=_rect_polygon(5, 5, 45, 40))
        for i in range(NUM_IMAGES)
    ]
    write_tiny_coco(tmp_path, images, anns)
    return tmp_path


def _gather_cfg(root):
    return dict(
        type="CocoDataset",
        ann_file=str(root / "ann.json"),
        img_prefix=str(root / "imgs"),
        classes=CLASSES,
        pipeline=TEST_PIPELINE,
        test_mode=True,
    )


def _results_match(results) -> bool:
    for i, (boxes, masks) in enumerate(results):
        want_boxes, want_masks = _mask_detection(i, (48, 64))
        if not all(np.array_equal(a, b) for a, b in zip(boxes, want_boxes)):
            return False
        for got, want in zip(masks, want_masks):
            if len(got) != len(want) or not all(isinstance(m, dict) for m in got):
                return False
            if not all(np.array_equal(mask_api.decode(g).astype(bool), w) for g, w in zip(got, want)):
                return False
    return True


def _gather_worker(rank: int, world_size: int, port: int, root, out_file):
    import os

    from mmdet.utils import init_dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    init_dist("pytorch", backend="gloo")
    try:
        dataset = build_dataset(_gather_cfg(root))
        loader = build_dataloader(dataset, samples_per_gpu=1, workers_per_gpu=0, dist=True, shuffle=False)
        results = multi_gpu_test(FakeMaskDetector(), loader, show_progress=False)
        if rank == 0:
            metrics = dataset.evaluate(results, metric=["bbox", "segm"], logger="silent")
            out_file.write_text(json.dumps(dict(metrics=metrics, count=len(results), ok=_results_match(results))))
        else:
            assert results is None
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_test_loop_encodes_masks_and_two_processes_gather_them(gather_root, tmp_path):
    dataset = build_dataset(_gather_cfg(gather_root))
    loader = build_dataloader(dataset, samples_per_gpu=2, workers_per_gpu=0, shuffle=False)
    results = single_gpu_test(FakeMaskDetector(), loader, show_progress=False)
    assert len(results) == NUM_IMAGES and _results_match(results)
    expected = dataset.evaluate(results, metric=["bbox", "segm"], logger="silent")
    assert 0 < expected["segm_mAP"] < 1

    out_file = tmp_path / "rank0.json"
    mp.spawn(_gather_worker, args=(2, _free_port(), gather_root, out_file), nprocs=2, join=True)
    got = json.loads(out_file.read_text())
    assert got["count"] == NUM_IMAGES and got["ok"]
    assert got["metrics"] == dict(expected)


# ----------------------------------------------------------------------------------------------- synthetic data
# Recorded with the generator as it was before masks were added: make_synthetic_coco(root, 3, 2, seed=0).
BOX_JSON_SHA256 = {
    "train2017": "ad34ec3c78f497fd3d836ad73abb24d53c36b960c79840c63057e7d56fab0917",
    "val2017": "1c1acedfdca5da6b24dfb1500eb8cf6083f60e7999945d92c51c1d0f52338e6e",
}
RENDERED_PIXELS_SHA256 = {  # render_image's uint8 array, before JPEG encoding
    ("train2017", 1): "d55fa5e2093354a14f741425e49b9d8e96377bd60df1448d6fa6e044503ecfa3",
    ("train2017", 2): "3b0bb0bf90150550029a732b7a251f478164fdecd4e6de0e04afa89ebab5b662",
    ("train2017", 3): "9ae911c503c51ada5c66dc35b11ed34bb444c2480b53e21df7c67ed0a07aa4e1",
    ("val2017", 1): "dafd7b2adddedb9e861587faaf3878f43ec34a5b2d1ed682a39ed6ea0f5f0408",
    ("val2017", 2): "472072826b8e6d017949ca0b63a6745feeee2c1fdd63f71d88948df3e23520c9",
}
JPEG_OPENCV_VERSION = "5.1.0"  # the JPEG bytes depend on the encoder OpenCV bundles
JPEG_SHA256 = {
    ("train2017", 1): "458cfb63485d0a191f5631c3c67e6905132d0b01b55d7ade57b2392d6ecda744",
    ("train2017", 2): "5e7b3b56aa40d91a469cb0fca959cca4f47763d6eed68ce4f2eda49d65dd5972",
    ("train2017", 3): "34da18cf4e671e804fedc4ab6484a11d01a0b7a1bd21b384ef5d682c1dbac855",
    ("val2017", 1): "a20e93e9efd7699c75f2e6ef38a2378d403f116afd7a51a2cf1e6327598ca1e0",
    ("val2017", 2): "a34b71347c7c4a8b275f3bf6556be2fc81da592afc22e8e0c9a887eceb4f29ee",
}
SPLIT_INDEX = {"train2017": 0, "val2017": 1}


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_masks")
    synthetic.make_synthetic_coco(root, num_train=3, num_val=2, seed=0)
    return root


def _image_rng(split: str, image_id: int, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_INDEX[split], image_id - 1])


def test_boxes_and_images_are_the_bytes_from_before_masks(small_synthetic):
    for split, digest in BOX_JSON_SHA256.items():
        coco = json.loads((small_synthetic / "annotations" / f"instances_{split}.json").read_text())
        assert all(isinstance(a.pop("segmentation"), list) for a in coco["annotations"])
        text = json.dumps(coco, sort_keys=True, separators=(",", ":")) + "\n"
        assert hashlib.sha256(text.encode()).hexdigest() == digest, split
    for (split, image_id), digest in RENDERED_PIXELS_SHA256.items():
        rng = _image_rng(split, image_id)
        width, height = synthetic._image_size(rng)
        pixels, _ = synthetic.render_image(width, height, rng)
        assert hashlib.sha256(pixels.tobytes()).hexdigest() == digest, (split, image_id)
    if cv2.__version__ != JPEG_OPENCV_VERSION:
        pytest.skip(f"JPEG bytes were recorded with OpenCV {JPEG_OPENCV_VERSION}, this is {cv2.__version__}")
    for (split, image_id), digest in JPEG_SHA256.items():
        data = (small_synthetic / split / f"{image_id:012d}.jpg").read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, (split, image_id)


def test_masks_do_not_change_the_random_stream():
    for index in range(20):
        first = np.random.default_rng([5, 0, index])
        second = np.random.default_rng([5, 0, index])
        width, height = synthetic._image_size(first)
        synthetic._image_size(second)
        image, objects = synthetic.render_image(width, height, first)
        image2, objects2, masks = synthetic.render_image_and_masks(width, height, second)
        assert np.array_equal(image, image2) and objects == objects2 and len(masks) == len(objects)
        assert first.bytes(8) == second.bytes(8)


class _NoNoise:
    """A generator that draws exactly what the wrapped one draws, but whose normal draws come out as zeros."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng

    def normal(self, *args, **kwargs):
        return np.zeros_like(self._rng.normal(*args, **kwargs))

    def __getattr__(self, name):
        return getattr(self._rng, name)


def test_polygons_are_the_drawn_pixels_on_a_plain_background(small_synthetic, monkeypatch):
    """Redraw every image with the same random draws on a plain background (the textured one's mean colour, which
    the object colours are chosen against) without noise: the pixels of each object's colour are exactly its
    polygon's pycocotools rasterisation, and its box is the polygon's tight box."""
    original_background = synthetic._background

    def plain_background(height, width, rng):
        textured = original_background(height, width, rng._rng)  # the same draws, noise included
        return np.broadcast_to(textured.reshape(-1, 3).mean(axis=0), textured.shape).copy()

    monkeypatch.setattr(synthetic, "_background", plain_background)
    checked = 0
    for split in ("train2017", "val2017"):
        coco = COCO()
        coco.dataset = json.loads((small_synthetic / "annotations" / f"instances_{split}.json").read_text())
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        for image_id, info in coco.imgs.items():
            rng = _NoNoise(_image_rng(split, image_id))
            width, height = synthetic._image_size(rng)
            assert (width, height) == (info["width"], info["height"])
            plain, objects = synthetic.render_image(width, height, rng)
            anns = coco.imgToAnns[image_id]
            assert [(a["category_id"], a["bbox"]) for a in anns] == [(c, b) for c, b in objects]
            for annotation in anns:
                mask = coco.annToMask(annotation).astype(bool)
                colour = plain[mask][0]
                np.testing.assert_array_equal((plain == colour).all(axis=2), mask)
                rows, cols = np.nonzero(mask)
                x, y = float(cols.min()), float(rows.min())
                assert annotation["bbox"] == [x, y, cols.max() + 1 - x, rows.max() + 1 - y]
                checked += 1
    assert checked == 26


def _shoelace(polygon) -> float:
    points = np.asarray(polygon, dtype=float).reshape(-1, 2)
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_mask_polygons_rasterise_exactly():
    rng = np.random.default_rng(0)
    cases = [
        np.ones((1, 1), bool),
        np.ones((5, 7), bool),
        np.indices((6, 9)).sum(axis=0) % 2 == 0,  # a checkerboard: corners where outlines touch
        np.pad(np.ones((5, 5), bool), 2) & ~np.pad(np.pad(np.ones((1, 1), bool), 2), 2),  # a ring with a hole
    ]
    ring = np.zeros((30, 40), np.uint8)
    cv2.circle(ring, (15, 20), 12, 1, 3)
    cases.append(ring.astype(bool))
    cases += [rng.random((int(h), int(w))) < 0.45 for h, w in rng.integers(2, 25, size=(40, 2))]
    for mask in cases:
        polygons = synthetic.mask_polygons(mask)
        assert len(polygons) == 1 and all(isinstance(v, int) for v in polygons[0])
        height, width = mask.shape
        raster = mask_api.decode(mask_api.merge(mask_api.frPyObjects(polygons, height, width)))
        np.testing.assert_array_equal(raster.astype(bool), mask)
        assert _shoelace(polygons[0]) == mask.sum()
    assert synthetic.mask_polygons(np.zeros((4, 4), bool)) == []
    assert synthetic.mask_polygons(np.ones((1, 1), bool)) == [[0, 0, 1, 0, 1, 1, 0, 1]]


def test_encode_mask_is_one_rle():
    mask = _box_mask(9, 11, 2, 3, 7, 8)
    rle = encode_mask(mask)
    assert rle["size"] == [9, 11] and mask_api.area(rle) == 25

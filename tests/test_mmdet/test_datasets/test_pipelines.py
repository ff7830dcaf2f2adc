"""Pipeline numerics: resize rounding, normalisation, padding, flipping, formatting."""

import cv2
import numpy as np
import pytest

from mmdet.datasets.pipelines import (
    Collect,
    Compose,
    LoadImageFromFile,
    MultiScaleFlipAug,
    Normalize,
    Pad,
    RandomFlip,
    Resize,
    flip_bboxes,
    rescale_size,
)

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
TEST_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(
        type="MultiScaleFlipAug",
        img_scale=(1333, 800),
        flip=False,
        transforms=[
            dict(type="Resize", keep_ratio=True),
            dict(type="RandomFlip"),
            dict(type="Normalize", mean=MEAN, std=STD, to_rgb=True),
            dict(type="Pad", size_divisor=32),
            dict(type="ImageToTensor", keys=["img"]),
            dict(type="Collect", keys=["img"]),
        ],
    ),
]


@pytest.mark.parametrize(
    "size, resized, scales, padded",
    [
        ((640, 480), (1067, 800), (1.6671875, 1.6666666), (1088, 800)),
        ((480, 640), (800, 1067), (1.6666666, 1.6671875), (800, 1088)),
        ((640, 427), (1199, 800), (1.8734375, 1.8735363), (1216, 800)),
        ((500, 375), (1067, 800), (2.134, 2.1333334), (1088, 800)),
        ((333, 500), (800, 1201), (2.4024024, 2.402), (800, 1216)),
    ],
)
def test_resize_and_pad_match_mmdetection_values(size, resized, scales, padded):
    width, height = size
    assert rescale_size(width, height, (1333, 800)) == resized
    results = dict(img=np.zeros((height, width, 3), np.uint8), scale=(1333, 800))
    results = Pad(size_divisor=32)(Resize(keep_ratio=True)(results))
    assert results["img_shape"] == (resized[1], resized[0], 3)
    assert results["pad_shape"] == (padded[1], padded[0], 3)
    factor = results["scale_factor"]
    assert factor.dtype == np.float32
    np.testing.assert_array_equal(factor, np.array([scales[0], scales[1]] * 2, dtype=np.float32))


def test_full_test_pipeline_on_640x480_file(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), img)
    sample = Compose(TEST_PIPELINE)(dict(img_info=dict(filename="x.png"), img_prefix=str(tmp_path)))
    assert set(sample) == {"img", "img_metas"}
    assert tuple(sample["img"].shape) == (3, 800, 1088)
    meta = sample["img_metas"]
    assert set(meta) == {
        "filename",
        "ori_filename",
        "ori_shape",
        "img_shape",
        "pad_shape",
        "scale_factor",
        "flip",
        "flip_direction",
        "img_norm_cfg",
    }
    assert meta["ori_shape"] == (480, 640, 3) and meta["img_shape"] == (800, 1067, 3)
    assert meta["pad_shape"] == (800, 1088, 3) and meta["flip"] is False and meta["flip_direction"] is None
    np.testing.assert_array_equal(meta["scale_factor"], np.float32([1.6671875, 1.6666666, 1.6671875, 1.6666666]))
    # Pixels: OpenCV bilinear on uint8 BGR, then normalisation, then zero padding.
    resized = cv2.resize(img, (1067, 800), interpolation=cv2.INTER_LINEAR)
    expected = Normalize(MEAN, STD)(dict(img=resized))["img"]
    np.testing.assert_array_equal(sample["img"][:, :, :1067].permute(1, 2, 0).numpy(), expected)
    assert sample["img"][:, :, 1067:].abs().sum() == 0


def test_normalize_multiplies_by_reciprocal_in_rgb_order():
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = Normalize(MEAN, STD, to_rgb=True)(dict(img=img.copy()))
    got = out["img"]
    assert got.dtype == np.float32 and out["img_norm_cfg"]["to_rgb"] is True
    centred = img[..., ::-1].astype(np.float32) - np.float32(MEAN)
    inv_std = 1 / np.float64(np.float32(STD))
    # A product with the float64 reciprocal, rounded to float32 either after (OpenCV 5) or before the product.
    candidates = [(centred * inv_std).astype(np.float32), centred * inv_std.astype(np.float32)]
    assert any(np.array_equal(got, c) for c in candidates)
    division = centred / np.float32(STD)
    np.testing.assert_allclose(got, division, rtol=2.5e-7, atol=1e-7)
    bgr = Normalize(MEAN, STD, to_rgb=False)(dict(img=img.copy()))["img"]
    np.testing.assert_allclose(bgr, (img.astype(np.float32) - np.float32(MEAN)) / np.float32(STD), rtol=1e-6, atol=1e-7)


def test_pad_after_normalize_is_zero_bottom_right():
    img = np.full((33, 40, 3), 7, np.uint8)
    results = Pad(size_divisor=32)(Normalize(MEAN, STD)(dict(img=img)))
    assert results["img"].shape == (64, 64, 3) and results["pad_shape"] == (64, 64, 3)
    assert np.all(results["img"][33:] == 0) and np.all(results["img"][:, 40:] == 0)
    assert np.all(results["img"][:33, :40] != 0)


def test_train_resize_scales_and_clips_boxes():
    boxes = np.array([[10, 20, 30, 40], [0, 0, 100, 50]], np.float32)
    results = dict(img=np.zeros((50, 100, 3), np.uint8), gt_bboxes=boxes, bbox_fields=["gt_bboxes"])
    results = Resize(img_scale=(200, 100), keep_ratio=True)(results)
    assert results["img_shape"] == (100, 200, 3)
    np.testing.assert_array_equal(results["gt_bboxes"], [[20, 40, 60, 80], [0, 0, 200, 100]])
    results = dict(
        img=np.zeros((50, 100, 3), np.uint8),
        gt_bboxes=np.array([[90, 40, 130, 60]], np.float32),
        bbox_fields=["gt_bboxes"],
    )
    results = Resize(img_scale=(100, 50), keep_ratio=True)(results)
    np.testing.assert_array_equal(results["gt_bboxes"], [[90, 40, 100, 50]])


def test_horizontal_flip_of_image_and_boxes():
    boxes = np.array([[10, 5, 30, 15]], np.float32)
    np.testing.assert_array_equal(flip_bboxes(boxes, (20, 100, 3), "horizontal"), [[70, 5, 90, 15]])
    np.testing.assert_array_equal(flip_bboxes(boxes, (20, 100, 3), "vertical"), [[10, 5, 30, 15]])
    img = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    results = RandomFlip(flip_ratio=1.0)(
        dict(img=img.copy(), img_shape=img.shape, gt_bboxes=boxes.copy(), bbox_fields=["gt_bboxes"])
    )
    assert results["flip"] is True and results["flip_direction"] == "horizontal"
    np.testing.assert_array_equal(results["img"], img[:, ::-1])
    np.testing.assert_array_equal(results["gt_bboxes"], [[-26, 5, -6, 15]])  # W = 4: x' = 4 - x


def test_flip_ratio_draws_from_numpy_rng_and_obeys_preset_flag():
    np.random.seed(3)
    flips = [RandomFlip(flip_ratio=0.5)(dict(img=np.zeros((2, 2, 3), np.uint8)))["flip"] for _ in range(200)]
    assert 60 < sum(flips) < 140
    preset = RandomFlip(flip_ratio=1.0)(dict(img=np.zeros((2, 2, 3), np.uint8), flip=False, flip_direction=None))
    assert preset["flip"] is False


def test_load_image_is_bgr_uint8_and_grayscale_becomes_three_channels(tmp_path):
    color = np.zeros((4, 5, 3), np.uint8)
    color[..., 0] = 200  # blue in BGR
    cv2.imwrite(str(tmp_path / "c.png"), color)
    cv2.imwrite(str(tmp_path / "g.png"), np.full((4, 5), 9, np.uint8))
    loaded = LoadImageFromFile()(dict(img_info=dict(filename="c.png"), img_prefix=str(tmp_path)))
    assert loaded["img"].dtype == np.uint8 and loaded["img"][0, 0].tolist() == [200, 0, 0]
    assert loaded["ori_shape"] == (4, 5, 3) and loaded["ori_filename"] == "c.png"
    gray = LoadImageFromFile()(dict(img_info=dict(filename="g.png"), img_prefix=str(tmp_path)))
    assert gray["img"].shape == (4, 5, 3)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        LoadImageFromFile()(dict(img_info=dict(filename="missing.png"), img_prefix=str(tmp_path)))


def test_config_errors_are_explicit():
    with pytest.raises(ValueError, match="exactly one img_scale"):
        MultiScaleFlipAug(transforms=[], img_scale=[(1333, 800), (1000, 600)])
    with pytest.raises(ValueError, match="flip=True"):
        MultiScaleFlipAug(transforms=[], img_scale=(1333, 800), flip=True)
    with pytest.raises(KeyError, match="img_norm_cfg"):
        Collect(keys=["img"])(
            dict(
                img=np.zeros((2, 2, 3)),
                filename="x",
                ori_filename="x",
                ori_shape=(2, 2, 3),
                img_shape=(2, 2, 3),
                pad_shape=(2, 2, 3),
                scale_factor=1.0,
                flip=False,
                flip_direction=None,
            )
        )
    with pytest.raises(KeyError, match="type"):
        Compose([dict(keys=["img"])])

"""Image checks before a long run: every test image exists and is a complete file; --eval names a supported metric."""

import cv2
import numpy as np
import pytest

from helpers.coco_files import CLASSES, TEST_PIPELINE, ann, write_tiny_coco
from mmdet.datasets import CocoDataset, ImageFileError, read_image_header, verify_dataset_images, verify_image_files


def _write(path, width=37, height=23, ext=".jpg", params=()):
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(ext, pixels, list(params))
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    "ext, params, fmt",
    [
        (".jpg", (), "jpeg"),
        (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), "jpeg"),
        (".png", (), "png"),
        (".bmp", (), "bmp"),
    ],
)
def test_header_gives_the_decoded_size(tmp_path, ext, params, fmt):
    path = _write(tmp_path / f"img{ext}", width=41, height=19, ext=ext, params=params)
    header = read_image_header(str(path))
    decoded = cv2.imread(str(path))
    assert header.format == fmt
    assert (header.height, header.width) == decoded.shape[:2] == (19, 41)


@pytest.mark.parametrize("ext, problem", [(".jpg", "truncated JPEG"), (".png", "truncated"), (".bmp", "truncated BMP")])
def test_truncated_images_are_named(tmp_path, ext, problem):
    path = _truncate(_write(tmp_path / f"cut{ext}", width=64, height=48, ext=ext))
    with pytest.raises(ImageFileError, match=problem) as info:
        read_image_header(str(path))
    assert str(path) in str(info.value)


def test_missing_empty_and_foreign_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not an image\n")
    for name, problem in [("absent.jpg", "no such file"), ("empty.jpg", "empty file"), ("notes.jpg", "not a JPEG")]:
        with pytest.raises(ImageFileError, match=problem):
            read_image_header(str(tmp_path / name))


def test_jpeg_cut_inside_the_header(tmp_path):
    path = _write(tmp_path / "head.jpg")
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(ImageFileError, match="truncated inside the JPEG"):
        read_image_header(str(path))


def test_every_bad_file_is_listed_once_up_to_ten(tmp_path):
    good = [str(_write(tmp_path / f"ok{i}.jpg")) for i in range(3)]
    bad = [str(tmp_path / f"gone{i}.jpg") for i in range(12)]
    with pytest.raises(ImageFileError) as info:
        verify_image_files(good + bad, "val.json", progress=False)
    message = str(info.value)
    assert message.startswith("12 of the 15 images of val.json")
    assert bad[0] in message and bad[9] in message and bad[10] not in message and "and 2 more" in message
    assert all(path not in message for path in good)


def test_progress_bar_is_shown_on_request(tmp_path, capsys):
    paths = [str(_write(tmp_path / f"p{i}.png", ext=".png")) for i in range(2)]
    headers = verify_image_files(paths, "set", progress=True)
    assert [h.format for h in headers] == ["png", "png"]
    assert "checking images" in capsys.readouterr().err


def test_dataset_check_names_the_annotation_file_and_the_bad_images(tmp_path):
    images = [dict(id=i, file_name=f"{i}.png", width=48, height=40) for i in (1, 2, 3)]
    ann_file = write_tiny_coco(tmp_path, images, [ann(1, 1, [2, 2, 10, 10], 7)])
    dataset = CocoDataset(
        str(ann_file), TEST_PIPELINE, classes=CLASSES, img_prefix=str(tmp_path / "imgs"), test_mode=True
    )
    assert [tuple(h) for h in verify_dataset_images(dataset, progress=False)] == [("png", 48, 40)] * 3
    (tmp_path / "imgs" / "2.png").unlink()
    _truncate(tmp_path / "imgs" / "3.png", keep=0.9)
    with pytest.raises(ImageFileError) as info:
        verify_dataset_images(dataset, progress=False)
    message = str(info.value)
    assert str(ann_file) in message and "2 of the 3 images" in message
    assert "2.png: no such file" in message and "3.png: truncated PNG" in message


def test_unsupported_metric_is_named_with_the_supported_ones():
    assert CocoDataset.check_metrics("bbox") == ["bbox"]
    assert CocoDataset.check_metrics(["bbox", "proposal"]) == ["bbox", "proposal"]
    with pytest.raises(KeyError, match=r"'bboxx' is not supported by CocoDataset \(did you mean 'bbox'\?\)"):
        CocoDataset.check_metrics(["bbox", "bboxx"])

"""Fast checks that every image of a dataset exists and is a complete JPEG, PNG or BMP file.

Only the file headers and tails are read (no pixel decoding): the format from its magic bytes, the size from the
header, and the end marker that a truncated file lacks.
"""

import os
import os.path as osp
import struct
from collections.abc import Iterable
from typing import BinaryIO, NamedTuple, Optional

from tqdm import tqdm

from mmdet.utils.errors import UserError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_BMP_MAGIC = b"BM"
# JPEG start-of-frame markers carry the image size; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but do not.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7, SOI.
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8), 0xD8])
_JPEG_TAIL_BYTES = 64
_SHOWN_FILES = 10
_PROGRESS_MIN_IMAGES = 500


class ImageFileError(UserError, ValueError):
    """An image file is missing, empty, of an unknown format, or truncated."""


class ImageHeader(NamedTuple):
    format: str  # 'jpeg' | 'png' | 'bmp'
    width: int
    height: int


def _read_exact(f: BinaryIO, count: int, filename: str, what: str) -> bytes:
    data = f.read(count)
    if len(data) < count:
        raise ImageFileError(f"{filename}: truncated inside the {what}")
    return data


def _png_header(f: BinaryIO, filename: str, size: int) -> ImageHeader:
    chunk = _read_exact(f, 16, filename, "PNG header")  # length (4), b'IHDR' (4), width (4), height (4)
    if chunk[4:8] != b"IHDR":
        raise ImageFileError(f"{filename}: PNG without an IHDR chunk first")
    width, height = struct.unpack(">II", chunk[8:16])
    f.seek(size - len(_PNG_END))
    if f.read(len(_PNG_END)) != _PNG_END:
        raise ImageFileError(f"{filename}: truncated PNG (no IEND chunk at the end of its {size} bytes)")
    return ImageHeader("png", width, height)


def _jpeg_header(f: BinaryIO, filename: str, size: int) -> ImageHeader:
    f.seek(2)
    while True:
        if _read_exact(f, 1, filename, "JPEG header") != b"\xff":
            raise ImageFileError(f"{filename}: corrupt JPEG header (no marker at byte {f.tell() - 1})")
        marker = 0xFF
        while marker == 0xFF:  # fill bytes may precede a marker
            marker = _read_exact(f, 1, filename, "JPEG header")[0]
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if marker == 0xD9:
            raise ImageFileError(f"{filename}: JPEG ends before its frame header")
        (length,) = struct.unpack(">H", _read_exact(f, 2, filename, "JPEG header"))
        if length < 2:
            raise ImageFileError(f"{filename}: corrupt JPEG header (segment length {length} at byte {f.tell() - 2})")
        if marker in _JPEG_FRAME_MARKERS:
            _, height, width = struct.unpack(">BHH", _read_exact(f, 5, filename, "JPEG frame header"))
            break
        f.seek(length - 2, os.SEEK_CUR)
    f.seek(max(0, size - _JPEG_TAIL_BYTES))
    tail = f.read().rstrip(b"\x00\r\n\t ")  # some writers pad after the end marker
    if not tail.endswith(_JPEG_END):
        raise ImageFileError(f"{filename}: truncated JPEG (no end-of-image marker at the end of its {size} bytes)")
    return ImageHeader("jpeg", width, height)


def _bmp_header(f: BinaryIO, filename: str, size: int) -> ImageHeader:
    header = _read_exact(f, 26, filename, "BMP header")  # magic (2), file size (4), ..., width (4) and height (4) at 18
    (declared,) = struct.unpack("<I", header[2:6])
    width, height = struct.unpack("<ii", header[18:26])
    if size < declared:
        raise ImageFileError(f"{filename}: truncated BMP ({size} of its {declared} bytes)")
    return ImageHeader("bmp", abs(width), abs(height))


def read_image_header(filename: str) -> ImageHeader:
    """Format and size of an image file from its header, after checking that the file is complete.

    Args:
        filename: a JPEG, PNG or BMP file.

    Returns:
        ImageHeader(format, width, height).

    Raises:
        ImageFileError: the file is missing, empty, of another format, truncated, or declares a zero size.
    """
    if not osp.isfile(filename):
        raise ImageFileError(f"{filename}: no such file")
    size = osp.getsize(filename)
    if size == 0:
        raise ImageFileError(f"{filename}: empty file (0 bytes)")
    with open(filename, "rb") as f:
        magic = f.read(len(_PNG_MAGIC))
        if magic.startswith(_PNG_MAGIC):
            header = _png_header(f, filename, size)
        elif magic.startswith(_JPEG_MAGIC):
            header = _jpeg_header(f, filename, size)
        elif magic.startswith(_BMP_MAGIC):
            f.seek(0)
            header = _bmp_header(f, filename, size)
        else:
            raise ImageFileError(f"{filename}: not a JPEG, PNG or BMP image (starts with {magic!r})")
    if header.width == 0 or header.height == 0:
        raise ImageFileError(
            f"{filename}: {header.format.upper()} header declares a {header.width}x{header.height} image"
        )
    return header


def verify_image_files(filenames: Iterable[str], source: str, progress: Optional[bool] = None) -> list[ImageHeader]:
    """Check every file with :func:`read_image_header`; fail once, listing every bad file.

    Args:
        filenames: image paths.
        source: what the images belong to (e.g. the annotation file), for the message.
        progress: show a progress bar; None shows one from 500 images on.

    Returns:
        One ImageHeader per file, in order.

    Raises:
        ImageFileError: naming the first ten bad files with their problem and the number of bad files.
    """
    filenames = list(filenames)
    show = len(filenames) >= _PROGRESS_MIN_IMAGES if progress is None else progress
    headers: list[ImageHeader] = []
    problems: list[tuple[str, str]] = []
    for filename in tqdm(filenames, desc="checking images", unit="img", disable=not show):
        try:
            headers.append(read_image_header(filename))
        except ImageFileError as err:
            problems.append((filename, str(err)))
    if problems:
        shown = "\n  ".join(message for _, message in problems[:_SHOWN_FILES])
        more = f"\n  ... and {len(problems) - _SHOWN_FILES} more" if len(problems) > _SHOWN_FILES else ""
        raise ImageFileError(
            f"{len(problems)} of the {len(filenames)} images of {source} are missing or unreadable:\n  {shown}{more}"
        )
    return headers


def verify_dataset_images(dataset, progress: Optional[bool] = None) -> list[ImageHeader]:
    """Check that every image of a CocoDataset-like dataset exists and is a complete image file.

    Args:
        dataset: has `data_infos` (dicts with 'filename'), `img_prefix` and `ann_file`, as CocoDataset.
        progress: see :func:`verify_image_files`.

    Returns:
        One ImageHeader per image, in dataset order.

    Raises:
        ImageFileError: naming the annotation file and the bad images.
    """
    prefix = dataset.img_prefix
    filenames = [osp.join(prefix, info["filename"]) if prefix else info["filename"] for info in dataset.data_infos]
    return verify_image_files(filenames, f"{dataset.ann_file} (img_prefix {prefix!r})", progress)

"""A small, deterministic COCO-format detection data set of coloured shapes on textured backgrounds.

It stands in for COCO where COCO is out of reach (tests, CI, the demo): the same file layout
(`train2017/`, `val2017/`, `annotations/instances_{train,val}2017.json`), non-contiguous category ids
like COCO's, images of varied size and aspect, objects from a few pixels to most of the image, some
overlapping. Every image is drawn from its own random stream seeded by (seed, split, index), so the
same seed gives the same bytes (with the same OpenCV build, which encodes the JPEGs), and the first N
images of a split do not depend on how many follow.

Boxes are the tight extent of each object's *visible* pixels; an object that a later one would hide
beyond `MAX_OCCLUDED_FRACTION` is not drawn at all, so every drawn shape is annotated. The `area` field
is the box area, which is what COCO's small/medium/large split then uses (for boxes and masks alike).

Every annotation also carries its instance mask as COCO polygons (`segmentation`): exactly the object's visible
pixels, traced along pixel edges from the renderer's record of which object is on top where (see
`mask_polygons`), so pycocotools rasterises them back to those pixels bit for bit and the box is the tight box
of the mask. Tracing draws nothing and consumes no random numbers: the images and boxes are the same bytes as
before masks were added.
"""

import json
import math
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from mmdet.utils.errors import ConfigValueError

# (category id, name); ids have gaps like COCO's.
SYNTHETIC_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "circle"),
    (3, "rectangle"),
    (4, "triangle"),
    (7, "star"),
    (9, "cross"),
    (12, "crescent"),
)
SYNTHETIC_CLASSES: tuple[str, ...] = tuple(name for _, name in SYNTHETIC_CATEGORIES)

DEFAULT_NUM_TRAIN = 1200
DEFAULT_NUM_VAL = 200

SIDE_RANGE = (240, 400)  # image width and height, pixels
MIN_ASPECT_GAP = 24  # |width - height| at least this, so no image is square
OBJECTS_PER_IMAGE = (1, 8)
MIN_OBJECT_SIZE = 8  # pixels, the shape's outer extent before rotation
MAX_OBJECT_FRACTION = 0.6  # of the image's shorter side
SMALL_OBJECT_PROBABILITY = 0.12  # share of objects drawn between MIN_OBJECT_SIZE and SMALL_OBJECT_LIMIT
SMALL_OBJECT_LIMIT = 24
MAX_OCCLUDED_FRACTION = 0.35  # a new object may hide at most this share of an earlier one's pixels
PLACEMENT_TRIES = 20
MIN_COLOUR_DISTANCE = 120  # L1 distance (0..765) between an object's colour and the background's mean
JPEG_QUALITY = 92

_SPLIT_INDEX = {"train2017": 0, "val2017": 1}


# ----------------------------------------------------------------------------------------------- shapes
def _regular_polygon(num_vertices: int, radius: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + np.arange(num_vertices) * (2 * math.pi / num_vertices)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _circle(size: float, rng: np.random.Generator) -> np.ndarray:
    return _regular_polygon(48, size / 2)


def _rectangle(size: float, rng: np.random.Generator) -> np.ndarray:
    half_w, half_h = size / 2, size / 2 * rng.uniform(0.35, 0.9)
    return np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])


def _triangle(size: float, rng: np.random.Generator) -> np.ndarray:
    return _regular_polygon(3, size / 2, phase=-math.pi / 2)


def _star(size: float, rng: np.random.Generator) -> np.ndarray:
    outer = _regular_polygon(5, size / 2, phase=-math.pi / 2)
    inner = _regular_polygon(5, size / 2 * 0.42, phase=-math.pi / 2 + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(size: float, rng: np.random.Generator) -> np.ndarray:
    a, b = size / 2, size / 2 * rng.uniform(0.25, 0.4)
    return np.array(
        [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]]
    )


def _crescent(size: float, rng: np.random.Generator) -> np.ndarray:
    """Outer arc of a disc, then back along the arc of a second, offset disc cut out of it."""
    radius = size / 2
    inner_radius, offset = radius * 0.8, radius * 0.55
    # The two circles meet where x = (r^2 - R^2 + d^2) / (2 d) along the offset axis.
    meet_x = (radius**2 - inner_radius**2 + offset**2) / (2 * offset)
    outer_half = math.acos(meet_x / radius)
    inner_half = math.acos((meet_x - offset) / inner_radius)
    outer_angles = np.linspace(outer_half, 2 * math.pi - outer_half, 40)
    inner_angles = np.linspace(2 * math.pi - inner_half, inner_half, 32)
    outer = np.stack([radius * np.cos(outer_angles), radius * np.sin(outer_angles)], axis=1)
    inner = np.stack([offset + inner_radius * np.cos(inner_angles), inner_radius * np.sin(inner_angles)], axis=1)
    return np.concatenate([outer, inner])


_SHAPE_DRAWERS = {
    "circle": _circle,
    "rectangle": _rectangle,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
    "crescent": _crescent,
}


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


# ----------------------------------------------------------------------------------------------- drawing
def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A colour gradient plus blurred blotches and stripes: texture that is not trivially separable from objects."""
    base = rng.uniform(40, 215, size=3)
    tilt = rng.uniform(-60, 60, size=(2, 3))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = base + (ys / height)[..., None] * tilt[0] + (xs / width)[..., None] * tilt[1]
    blotches = rng.normal(0, 1, size=(height // 20 + 1, width // 20 + 1, 3)).astype(np.float32)
    image += 12 * cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 30)
    stripes = np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / period))
    image += rng.uniform(0, 10) * stripes[..., None] * rng.uniform(-1, 1, size=3)
    return image


def _object_colour(background_mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        if np.abs(colour - background_mean).sum() >= MIN_COLOUR_DISTANCE:
            return colour
    return 255 - background_mean  # fall back to the complement, always far enough away


def _object_size(short_side: int, rng: np.random.Generator) -> float:
    largest = MAX_OBJECT_FRACTION * short_side
    if rng.uniform() < SMALL_OBJECT_PROBABILITY:
        return rng.uniform(MIN_OBJECT_SIZE, SMALL_OBJECT_LIMIT)
    return math.exp(rng.uniform(math.log(SMALL_OBJECT_LIMIT), math.log(largest)))


def _shape_mask(points: np.ndarray, filled: bool, thickness: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    polygon = [np.round(points).astype(np.int32)]
    if filled:
        cv2.fillPoly(mask, polygon, 1, lineType=cv2.LINE_8)
    else:
        cv2.polylines(mask, polygon, True, 1, thickness=thickness, lineType=cv2.LINE_8)
    return mask.astype(bool)


def render_image(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """Draw one image; returns it (BGR uint8) and its objects as (category id, [x, y, w, h]) of visible pixels."""
    image, categories, owner = _render(width, height, rng)
    return image, list(zip(categories, visible_boxes(owner, len(categories))))


def render_image_and_masks(
    width: int, height: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, list[float]]], list[np.ndarray]]:
    """`render_image` (the same draws, the same image) plus each object's visible pixels as a bool (H, W) mask."""
    image, categories, owner = _render(width, height, rng)
    masks = [owner == index for index in range(len(categories))]
    return image, list(zip(categories, visible_boxes(owner, len(categories)))), masks


def _render(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int], np.ndarray]:
    """The image, the category id of each drawn object and the (H, W) map of the object on top (-1: background)."""
    image = _background(height, width, rng)
    background_mean = image.reshape(-1, 3).mean(axis=0)
    owner = np.full((height, width), -1, np.int32)  # index of the object on top at each pixel
    full_areas: list[int] = []
    categories: list[int] = []
    short_side = min(height, width)
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        category_index = int(rng.integers(len(SYNTHETIC_CATEGORIES)))
        category_id, name = SYNTHETIC_CATEGORIES[category_index]
        size = _object_size(short_side, rng)
        outline = _rotate(_SHAPE_DRAWERS[name](size, rng), rng.uniform(0, 2 * math.pi))
        filled = size < 14 or rng.uniform() < 0.7
        thickness = int(rng.integers(2, max(3, int(size / 8)) + 1))
        colour = _object_colour(background_mean, rng)
        mask = None
        for _ in range(PLACEMENT_TRIES):
            margin = size / 2
            centre = rng.uniform([margin, margin], [width - margin, height - margin])
            candidate = _shape_mask(outline + centre, filled, thickness, height, width)
            if candidate.sum() > 0 and occludes_too_much(candidate, owner, full_areas):
                continue
            mask = candidate
            break
        if mask is None or not mask.any():
            continue
        owner[mask] = len(full_areas)
        full_areas.append(int(mask.sum()))
        categories.append(category_id)
        image[mask] = colour
    image += rng.normal(0, 4, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), categories, owner


def visible_boxes(owner: np.ndarray, num_objects: int) -> list[list[float]]:
    """Tight [x, y, w, h] around the pixels where each object 0..num_objects-1 is on top (box edges on pixel edges)."""
    boxes = []
    for index in range(num_objects):
        ys, xs = np.nonzero(owner == index)
        if xs.size == 0:
            raise ValueError(f"object {index} has no visible pixel")
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        boxes.append([float(x1), float(y1), float(x2 - x1), float(y2 - y1)])
    return boxes


def occludes_too_much(mask: np.ndarray, owner: np.ndarray, full_areas: list[int]) -> bool:
    """Whether drawing `mask` on top would leave some earlier object with too little of itself visible."""
    covered = owner[mask]
    covered = covered[covered >= 0]
    if covered.size == 0:
        return False
    hidden_now = np.bincount(covered, minlength=len(full_areas))
    visible_before = np.bincount(owner[owner >= 0], minlength=len(full_areas))
    hidden_total = np.array(full_areas) - visible_before + hidden_now
    return bool((hidden_total > MAX_OCCLUDED_FRACTION * np.array(full_areas)).any())


# ----------------------------------------------------------------------------------------------- masks
def mask_polygons(mask: np.ndarray) -> list[list[int]]:
    """COCO polygons of a bool (H, W) mask that pycocotools rasterises back to exactly its pixels.

    The outlines run along pixel edges (integer corners; pixel (row r, column c) covers [c, c + 1] x [r, r + 1])
    with the mask on the right of every edge (image coordinates, y down): outer outlines turn clockwise on screen,
    outlines of holes the other way. All outlines of the mask make one polygon: after each outline a straight
    bridge leads from its first corner to the next outline's, and the bridges are walked back at the end. A bridge
    walked both ways adds nothing: pycocotools fills a polygon by the parity of its edge crossings in each pixel
    column (the bridge crosses a column twice at the same place), and a non-zero winding fill sees the holes
    turning the other way. The shoelace area of the polygon is the pixel count. An empty mask gives [].
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    stride = width + 1  # corner (x, y) is node y * stride + x
    # On the horizontal line y: pixels below (row y) and above (row y - 1); (y, x) of each unit edge.
    below, above = padded[1:, 1:-1], padded[:-1, 1:-1]
    tops = np.argwhere(below & ~above)  # edge (x, y) -> (x + 1, y)
    bottoms = np.argwhere(above & ~below)  # edge (x + 1, y) -> (x, y)
    # On the vertical line x: pixels right (column x) and left (column x - 1).
    right, left = padded[1:-1, 1:], padded[1:-1, :-1]
    lefts = np.argwhere(right & ~left)  # edge (x, y + 1) -> (x, y)
    rights = np.argwhere(left & ~right)  # edge (x, y) -> (x, y + 1)

    def node(corners: np.ndarray, dx: int, dy: int) -> np.ndarray:
        return (corners[:, 0] + dy) * stride + corners[:, 1] + dx

    starts = np.concatenate([node(tops, 0, 0), node(bottoms, 1, 0), node(lefts, 0, 1), node(rights, 0, 0)])
    ends = np.concatenate([node(tops, 1, 0), node(bottoms, 0, 0), node(lefts, 0, 0), node(rights, 0, 1)])
    order = np.argsort(starts, kind="stable")
    outgoing: dict[int, list[int]] = {}
    for start, end in zip(starts[order].tolist(), ends[order].tolist()):
        outgoing.setdefault(start, []).append(end)

    # Every corner has as many edges in as out, so a walk can only end where it began.
    outlines = []
    for first, pending in outgoing.items():
        while pending:
            walk = [first]
            corner = pending.pop()
            while corner != first:
                walk.append(corner)
                corner = outgoing[corner].pop()
            points = np.stack([np.array(walk) % stride, np.array(walk) // stride], axis=1)
            # Keep the corners where the outline turns.
            turns = np.any((points - np.roll(points, 1, axis=0)) != (np.roll(points, -1, axis=0) - points), axis=1)
            outlines.append(points[turns])
    if not outlines:
        return []
    if len(outlines) == 1:
        return [outlines[0].reshape(-1).tolist()]
    parts = []
    for points in outlines:
        parts += [points, points[:1]]  # each outline closed back to its first corner
    parts += [points[:1] for points in outlines[-2:0:-1]]  # back along the bridges (the last one closes itself)
    return [np.concatenate(parts).reshape(-1).tolist()]


# ----------------------------------------------------------------------------------------------- data set
def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    while True:
        width, height = (int(v) for v in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, size=2))
        if abs(width - height) >= MIN_ASPECT_GAP:
            return width, height


def _write_split(out_dir: Path, split: str, num_images: int, seed: int, first_ann_id: int) -> dict:
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, _SPLIT_INDEX[split], index])
        width, height = _image_size(rng)
        pixels, objects, masks = render_image_and_masks(width, height, rng)
        image_id = index + 1
        file_name = f"{image_id:012d}.jpg"
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {image_dir / file_name} as JPEG")
        (image_dir / file_name).write_bytes(encoded.tobytes())
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for (category_id, bbox), mask in zip(objects, masks):
            annotations.append(
                {
                    "id": first_ann_id + len(annotations),
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "segmentation": mask_polygons(mask),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in SYNTHETIC_CATEGORIES]
    coco = {
        "info": {"description": f"synthetic shapes, {split}, seed {seed}", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    ann_dir = out_dir / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(coco, sort_keys=True, separators=(",", ":"))
    (ann_dir / f"instances_{split}.json").write_text(text + "\n")
    return coco


def make_synthetic_coco(
    out_dir: Union[str, Path], num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL, seed: int = 0
) -> dict[str, dict]:
    """Write the data set under `out_dir`; returns the two annotation dicts keyed by split name."""
    for name, value in (("num_train", num_train), ("num_val", num_val)):
        if not isinstance(value, int) or value < 1:
            raise ConfigValueError(f"make_synthetic_coco: {name} must be a positive integer, got {value!r}")
    out_dir = Path(out_dir)
    train = _write_split(out_dir, "train2017", num_train, seed, first_ann_id=1)
    # Annotation ids are unique over both splits, as in COCO.
    val = _write_split(out_dir, "val2017", num_val, seed, first_ann_id=len(train["annotations"]) + 1)
    return {"train2017": train, "val2017": val}

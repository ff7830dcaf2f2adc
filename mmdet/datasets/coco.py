"""CocoDataset: COCO-format json + images, mmdetection 2.28 parsing, filtering and bbox / segm evaluation."""

import contextlib
import difflib
import io
import json
import logging
import os.path as osp
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import Dataset

from mmdet.core.mask import encode_mask, is_mask_result
from mmdet.utils.errors import ConfigKeyError, InputFileNotFoundError, UserError

from .builder import DATASETS
from .pipelines import Compose

COCO_CLASSES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

# pycocotools' `stats` index of each reportable item.
COCO_METRIC_INDEX = {
    "mAP": 0,
    "mAP_50": 1,
    "mAP_75": 2,
    "mAP_s": 3,
    "mAP_m": 4,
    "mAP_l": 5,
    "AR@100": 6,
    "AR@300": 7,
    "AR@1000": 8,
    "AR_s@1000": 9,
    "AR_m@1000": 10,
    "AR_l@1000": 11,
}
DEFAULT_METRIC_ITEMS = {
    "bbox": ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l"),
    "segm": ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l"),
    "proposal": ("AR@100", "AR@300", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000"),
}


def print_log(msg: str, logger: Union[logging.Logger, str, None] = None) -> None:
    """Print (logger None), log at INFO (a Logger or a logger name) or drop ('silent')."""
    if logger is None:
        print(msg)
    elif logger == "silent":
        return
    elif isinstance(logger, logging.Logger):
        logger.info(msg)
    else:
        logging.getLogger(logger).info(msg)


class AnnotationFileError(UserError, ValueError):
    """A COCO annotation file is not valid json, lacks a required entry or does not name the dataset's classes."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_coco_json(data, ann_file: str) -> None:
    """Reject a malformed annotation file with a message naming the file and the offending entry."""
    if not isinstance(data, dict):
        raise AnnotationFileError(f"{ann_file}: the top level must be a json object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationFileError(f"{ann_file}: missing or non-list '{key}'")
    image_ids = set()
    for img in data["images"]:
        for key in ("id", "file_name", "width", "height"):
            if key not in img:
                raise AnnotationFileError(f"{ann_file}: image entry {img!r} lacks '{key}'")
        image_ids.add(img["id"])
    for cat in data["categories"]:
        if "id" not in cat or "name" not in cat:
            raise AnnotationFileError(f"{ann_file}: category entry {cat!r} needs 'id' and 'name'")
    ann_ids = set()
    for ann in data["annotations"]:
        ann_id = ann.get("id")
        where = f"{ann_file}: annotation id {ann_id}"
        if ann_id is None:
            raise AnnotationFileError(f"{ann_file}: annotation {ann!r} lacks 'id'")
        if ann_id in ann_ids:
            raise AnnotationFileError(f"{where} is not unique")
        ann_ids.add(ann_id)
        if ann.get("image_id") not in image_ids:
            raise AnnotationFileError(f"{where} refers to unknown image id {ann.get('image_id')!r}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise AnnotationFileError(f"{where}: 'bbox' must be 4 numbers [x, y, w, h], got {bbox!r}")
        if "category_id" not in ann:
            raise AnnotationFileError(f"{where} lacks 'category_id'")
        if not _is_number(ann.get("area", 0)):
            raise AnnotationFileError(f"{where}: 'area' must be a number, got {ann.get('area')!r}")


def load_coco(ann_file: str) -> COCO:
    """Read and validate a COCO json; build the pycocotools index (quietly)."""
    if not osp.isfile(ann_file):
        raise InputFileNotFoundError(f"annotation file not found: {ann_file}")
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise AnnotationFileError(f"{ann_file} is not valid json: {err}") from err
    _validate_coco_json(data, ann_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@DATASETS.register_module()
class CocoDataset(Dataset):
    """COCO-format detection dataset (mmdetection 2.x constructor).

    Label i is the i-th json category (in json order) whose name is in CLASSES; results and `img_ids`
    follow the json image order. Not in test mode, images without an annotation of the classes
    (`filter_empty_gt`) and images smaller than 32 pixels on a side are dropped.
    """

    CLASSES = COCO_CLASSES

    def __init__(
        self,
        ann_file: str,
        pipeline: Sequence[dict],
        classes: Union[Sequence[str], str, None] = None,
        data_root: Optional[str] = None,
        img_prefix: str = "",
        test_mode: bool = False,
        filter_empty_gt: bool = True,
    ):
        if data_root is not None:
            if not osp.isabs(ann_file):
                ann_file = osp.join(data_root, ann_file)
            if img_prefix and not osp.isabs(img_prefix):
                img_prefix = osp.join(data_root, img_prefix)
        self.ann_file = ann_file
        self.data_root = data_root
        self.img_prefix = img_prefix
        self.test_mode = test_mode
        self.filter_empty_gt = filter_empty_gt
        self.CLASSES = self.get_classes(classes)

        self.data_infos = self.load_annotations(ann_file)
        if not test_mode:
            keep = self._filter_imgs()
            self.data_infos = [self.data_infos[i] for i in keep]
            self.img_ids = [self.img_ids[i] for i in keep]
        self._set_group_flag()
        self.pipeline = Compose(pipeline)

    @classmethod
    def get_classes(cls, classes: Union[Sequence[str], str, None]) -> tuple:
        """None -> the class default; a str -> a text file with one name per line; else a sequence of names."""
        if classes is None:
            return tuple(cls.CLASSES)
        if isinstance(classes, str):
            if not osp.isfile(classes):
                raise InputFileNotFoundError(f"classes file not found: {classes}")
            with open(classes) as f:
                return tuple(line.strip() for line in f if line.strip())
        if isinstance(classes, (list, tuple)) and all(isinstance(name, str) for name in classes):
            return tuple(classes)
        raise TypeError(f"classes must be None, a file path or a sequence of names, got {classes!r}")

    def load_annotations(self, ann_file: str) -> list[dict]:
        self.coco = load_coco(ann_file)
        names = set(self.CLASSES)
        self.cat_ids = [cat["id"] for cat in self.coco.dataset["categories"] if cat["name"] in names]
        found = {cat["name"] for cat in self.coco.dataset["categories"]}
        missing = [name for name in self.CLASSES if name not in found]
        if missing:
            raise AnnotationFileError(f"{ann_file}: categories {missing} of the dataset classes are not in the json")
        self.cat2label = {cat_id: label for label, cat_id in enumerate(self.cat_ids)}
        self.img_ids = list(self.coco.imgs)
        data_infos = []
        for img_id in self.img_ids:
            info = dict(self.coco.imgs[img_id])
            info["filename"] = info["file_name"]
            data_infos.append(info)
        return data_infos

    def __len__(self) -> int:
        return len(self.data_infos)

    def _filter_imgs(self, min_size: int = 32) -> list[int]:
        ids_with_ann = {ann["image_id"] for ann in self.coco.anns.values()}
        ids_in_cat = set()
        for cat_id in self.cat_ids:
            ids_in_cat.update(self.coco.catToImgs.get(cat_id, []))
        ids_in_cat &= ids_with_ann
        keep = []
        for i, info in enumerate(self.data_infos):
            if self.filter_empty_gt and self.img_ids[i] not in ids_in_cat:
                continue
            if min(info["width"], info["height"]) >= min_size:
                keep.append(i)
        return keep

    def _set_group_flag(self) -> None:
        """Group 1: wider than tall; group 0 otherwise (for aspect-grouped batches)."""
        self.flag = np.array(
            [1 if info["width"] / info["height"] > 1 else 0 for info in self.data_infos], dtype=np.uint8
        )

    def get_ann_info(self, idx: int) -> dict:
        img_id = self.data_infos[idx]["id"]
        anns = self.coco.imgToAnns.get(img_id, [])
        return self._parse_ann_info(self.data_infos[idx], anns)

    def _parse_ann_info(self, img_info: dict, anns: list[dict]) -> dict:
        """Boxes [x1, y1, x2, y2] float32 and labels int64; crowd boxes go to `bboxes_ignore`. `masks` holds the
        `segmentation` of each kept box (None where an annotation has none), in box order."""
        bboxes, labels, bboxes_ignore, masks = [], [], [], []
        for ann in anns:
            if ann.get("ignore", False):
                continue
            x1, y1, w, h = ann["bbox"]
            inter_w = max(0, min(x1 + w, img_info["width"]) - max(x1, 0))
            inter_h = max(0, min(y1 + h, img_info["height"]) - max(y1, 0))
            if inter_w * inter_h == 0:
                continue
            if ann["area"] <= 0 or w < 1 or h < 1:
                continue
            if ann["category_id"] not in self.cat2label:
                continue
            box = [x1, y1, x1 + w, y1 + h]
            if ann.get("iscrowd", False):
                bboxes_ignore.append(box)
            else:
                bboxes.append(box)
                labels.append(self.cat2label[ann["category_id"]])
                masks.append(ann.get("segmentation"))
        return dict(
            bboxes=np.array(bboxes, dtype=np.float32).reshape(-1, 4),
            labels=np.array(labels, dtype=np.int64),
            bboxes_ignore=np.array(bboxes_ignore, dtype=np.float32).reshape(-1, 4),
            masks=masks,
        )

    def pre_pipeline(self, results: dict) -> dict:
        results["img_prefix"] = self.img_prefix
        results["bbox_fields"] = []
        results["mask_fields"] = []
        return results

    def prepare_train_img(self, idx: int) -> Optional[dict]:
        results = dict(img_info=self.data_infos[idx], ann_info=self.get_ann_info(idx))
        return self.pipeline(self.pre_pipeline(results))

    def prepare_test_img(self, idx: int) -> dict:
        results = dict(img_info=self.data_infos[idx])
        return self.pipeline(self.pre_pipeline(results))

    def __getitem__(self, idx: int) -> dict:
        if self.test_mode:
            return self.prepare_test_img(idx)
        while True:
            data = self.prepare_train_img(idx)
            if data is not None:
                return data
            # A pipeline step dropped this sample: draw another from the same aspect group.
            idx = int(np.random.choice(np.flatnonzero(self.flag == self.flag[idx])))

    # ----------------------------------------------------------------------------------------- evaluation
    @classmethod
    def check_metrics(cls, metric: Union[str, Sequence[str]]) -> list[str]:
        """The requested metrics as a list, each checked to be one that `evaluate` supports.

        Raises:
            KeyError: naming the unsupported metric, the closest supported one and every supported one.
        """
        metrics = [metric] if isinstance(metric, str) else list(metric)
        for name in metrics:
            if name not in DEFAULT_METRIC_ITEMS:
                close = difflib.get_close_matches(str(name), list(DEFAULT_METRIC_ITEMS), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigKeyError(
                    f"metric '{name}' is not supported by {cls.__name__}{hint}; "
                    f"choose from {sorted(DEFAULT_METRIC_ITEMS)}"
                )
        return metrics

    def _check_results(self, results) -> None:
        if not isinstance(results, list):
            raise TypeError(f"results must be a list (one entry per image), got {type(results).__name__}")
        if len(results) != len(self):
            raise ValueError(
                f"results has {len(results)} entries but the dataset ({self.ann_file}) has {len(self)} images"
            )
        for i, result in enumerate(results):
            if is_mask_result(result):
                dets, segms = result
                if isinstance(segms, tuple):
                    segms = segms[0]
                ok = len(dets) == len(self.cat_ids) and len(segms) == len(self.cat_ids)
                ok = ok and all(len(s) == len(np.asarray(d).reshape(-1, 5)) for d, s in zip(dets, segms))
                if not ok:
                    raise ValueError(
                        f"result {i} must be (boxes, masks): {len(self.cat_ids)} per-class (k, 5) arrays and "
                        f"{len(self.cat_ids)} per-class lists of k masks, got {result!r:.120}"
                    )
            elif not (isinstance(result, (list, tuple)) and len(result) == len(self.cat_ids)):
                raise ValueError(
                    f"result {i} must be a list of {len(self.cat_ids)} per-class (k, 5) arrays "
                    f"(or a (boxes, masks) tuple), got {type(result).__name__} {result!r:.80}"
                )
        if len({is_mask_result(result) for result in results}) > 1:
            raise ValueError("results mix (boxes, masks) tuples of mask detectors with box-only results")

    def _det2json(self, results: list) -> list[dict]:
        json_results = []
        for idx, result in enumerate(results):
            img_id = self.img_ids[idx]
            for label, dets in enumerate(result):
                dets = np.asarray(dets, dtype=np.float32).reshape(-1, 5)
                for x1, y1, x2, y2, score in dets.tolist():
                    json_results.append(
                        dict(
                            image_id=img_id,
                            bbox=[x1, y1, x2 - x1, y2 - y1],
                            score=score,
                            category_id=self.cat_ids[label],
                        )
                    )
        return json_results

    def _segm2json(self, results: list) -> list[dict]:
        """COCO segm records of `(boxes, masks)` results: the RLE (counts as str), the detection's box (xywh) and
        its score (the box score, or the mask scores of a `(masks, scores)` pair)."""
        json_results = []
        for idx, (dets, segms) in enumerate(results):
            img_id = self.img_ids[idx]
            scores = None
            if isinstance(segms, tuple):
                segms, scores = segms
            for label, class_dets in enumerate(dets):
                class_dets = np.asarray(class_dets, dtype=np.float32).reshape(-1, 5)
                for i, (x1, y1, x2, y2, box_score) in enumerate(class_dets.tolist()):
                    rle = segms[label][i]
                    rle = dict(rle) if isinstance(rle, dict) else encode_mask(rle)
                    if isinstance(rle["counts"], bytes):
                        rle["counts"] = rle["counts"].decode()
                    json_results.append(
                        dict(
                            image_id=img_id,
                            bbox=[x1, y1, x2 - x1, y2 - y1],
                            score=box_score if scores is None else float(scores[label][i]),
                            category_id=self.cat_ids[label],
                            segmentation=rle,
                        )
                    )
        return json_results

    def results2json(self, results: list, outfile_prefix: str) -> dict:
        """Write `<prefix>.bbox.json` (xywh boxes, COCO category ids) and, for `(boxes, masks)` results,
        `<prefix>.segm.json` (RLE masks); returns {'bbox': path, 'proposal': path[, 'segm': path]}."""
        self._check_results(results)
        with_masks = len(results) > 0 and all(is_mask_result(result) for result in results)
        box_results = [result[0] for result in results] if with_masks else results
        path = f"{outfile_prefix}.bbox.json"
        with open(path, "w") as f:
            json.dump(self._det2json(box_results), f)
        files = {"bbox": path, "proposal": path}
        if with_masks:
            files["segm"] = f"{outfile_prefix}.segm.json"
            with open(files["segm"], "w") as f:
                json.dump(self._segm2json(results), f)
        return files

    def format_results(self, results: list, jsonfile_prefix: Optional[str] = None):
        """(result files, temp dir or None); the temp dir must be cleaned up by the caller."""
        tmp_dir = None
        if jsonfile_prefix is None:
            tmp_dir = tempfile.TemporaryDirectory()
            jsonfile_prefix = osp.join(tmp_dir.name, "results")
        return self.results2json(results, jsonfile_prefix), tmp_dir

    def evaluate(
        self,
        results: list,
        metric: Union[str, Sequence[str]] = "bbox",
        logger: Union[logging.Logger, str, None] = None,
        jsonfile_prefix: Optional[str] = None,
        classwise: bool = False,
        proposal_nums: Sequence[int] = (100, 300, 1000),
        iou_thrs: Optional[Sequence[float]] = None,
        metric_items: Union[str, Sequence[str], None] = None,
    ) -> "OrderedDict[str, Union[float, str]]":
        """COCO evaluation with pycocotools. Values are floats rounded to 4 decimals; 'bbox' also
        reports `bbox_mAP_copypaste`. With no detection at all every value is 0.0 (pycocotools cannot load
        an empty result list; mmdetection then returns nothing)."""
        metrics = self.check_metrics(metric)
        if iou_thrs is None:
            iou_thrs = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
        if isinstance(metric_items, str):
            metric_items = [metric_items]
        if metric_items is not None:
            unknown = [item for item in metric_items if item not in COCO_METRIC_INDEX]
            if unknown:
                raise ConfigKeyError(f"metric items {unknown} are not supported; choose from {list(COCO_METRIC_INDEX)}")

        result_files, tmp_dir = self.format_results(results, jsonfile_prefix)
        eval_results = OrderedDict()
        try:
            for name in metrics:
                print_log(f"Evaluating {name}...", logger)
                if name not in result_files:
                    raise ConfigKeyError(
                        f"metric '{name}' needs mask results (per image a (boxes, masks) tuple, as a mask "
                        "detector gives); these results have boxes only"
                    )
                if name == "segm":
                    self._check_gt_segmentations()
                with open(result_files[name]) as f:
                    detections = json.load(f)
                if name == "segm":
                    # Without a box, pycocotools takes each result's area from its mask (mmdetection's choice).
                    for detection in detections:
                        detection.pop("bbox", None)
                items = list(metric_items) if metric_items is not None else list(DEFAULT_METRIC_ITEMS[name])
                if not detections:
                    print_log("The results of the whole dataset are empty: every metric is 0.", logger)
                    stats = np.zeros(len(COCO_METRIC_INDEX))
                else:
                    stats = self._run_cocoeval(detections, name, proposal_nums, iou_thrs, classwise, logger)
                for item in items:
                    eval_results[f"{name}_{item}"] = round(float(stats[COCO_METRIC_INDEX[item]]), 4)
                if name in ("bbox", "segm"):
                    eval_results[f"{name}_mAP_copypaste"] = " ".join(f"{value:.4f}" for value in stats[:6])
        finally:
            if tmp_dir is not None:
                tmp_dir.cleanup()
        return eval_results

    def _run_cocoeval(self, detections, metric, proposal_nums, iou_thrs, classwise, logger) -> np.ndarray:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_det = self.coco.loadRes(detections)
        coco_eval = COCOeval(self.coco, coco_det, "segm" if metric == "segm" else "bbox")
        coco_eval.params.catIds = self.cat_ids
        coco_eval.params.imgIds = self.img_ids
        coco_eval.params.maxDets = list(proposal_nums)
        coco_eval.params.iouThrs = np.asarray(iou_thrs)
        if metric == "proposal":
            coco_eval.params.useCats = 0
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        print_log("\n" + buffer.getvalue(), logger)
        if classwise and metric in ("bbox", "segm"):
            print_log("\n" + self._classwise_table(coco_eval), logger)
        return coco_eval.stats

    def _check_gt_segmentations(self) -> None:
        missing = [
            ann["id"]
            for ann in self.coco.dataset["annotations"]
            if ann.get("category_id") in self.cat2label and ann.get("segmentation") is None
        ]
        if missing:
            raise AnnotationFileError(
                f"{self.ann_file}: 'segm' evaluation needs a 'segmentation' in every annotation; "
                f"{len(missing)} lack one (ids {missing[:5]}{' ...' if len(missing) > 5 else ''})"
            )

    def _classwise_table(self, coco_eval: COCOeval) -> str:
        """Per-class AP: mean precision over IoUs and recall points, area 'all', the last maxDets."""
        precisions = coco_eval.eval["precision"]  # (iou, recall, class, area, maxDets)
        rows = []
        for k, cat_id in enumerate(self.cat_ids):
            precision = precisions[:, :, k, 0, -1]
            precision = precision[precision > -1]
            ap = float(np.mean(precision)) if precision.size else float("nan")
            rows.append((self.coco.cats[cat_id]["name"], f"{ap:0.3f}"))
        width = max(len(name) for name, _ in rows)
        lines = [f"{'category':<{width}}  AP"] + [f"{name:<{width}}  {ap}" for name, ap in rows]
        return "\n".join(lines)

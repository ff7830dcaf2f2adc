from .builder import DATASETS, PIPELINES, build_dataloader, build_dataset
from .coco import COCO_CLASSES, CocoDataset
from .collate import collate
from .pipelines import Compose
from .samplers import (
    DistributedGroupSampler,
    DistributedTestSampler,
    GroupSampler,
    interleave_shards,
    interleaved_indices,
)
from .verify import ImageFileError, ImageHeader, read_image_header, verify_dataset_images, verify_image_files

__all__ = [
    "DATASETS",
    "PIPELINES",
    "build_dataloader",
    "build_dataset",
    "COCO_CLASSES",
    "CocoDataset",
    "collate",
    "Compose",
    "DistributedGroupSampler",
    "DistributedTestSampler",
    "GroupSampler",
    "interleave_shards",
    "interleaved_indices",
    "ImageFileError",
    "ImageHeader",
    "read_image_header",
    "verify_dataset_images",
    "verify_image_files",
]

from .compose import Compose
from .formatting import Collect, DefaultFormatBundle, ImageToTensor, image_to_tensor, to_tensor
from .loading import LoadAnnotations, LoadImageFromFile, LoadImageFromWebcam, read_image
from .test_time_aug import MultiScaleFlipAug
from .transforms import Normalize, Pad, RandomFlip, Resize, flip_bboxes, normalize_image, rescale_size

__all__ = [
    "Compose",
    "Collect",
    "DefaultFormatBundle",
    "ImageToTensor",
    "image_to_tensor",
    "to_tensor",
    "LoadAnnotations",
    "LoadImageFromFile",
    "LoadImageFromWebcam",
    "read_image",
    "MultiScaleFlipAug",
    "Normalize",
    "Pad",
    "RandomFlip",
    "Resize",
    "flip_bboxes",
    "normalize_image",
    "rescale_size",
]

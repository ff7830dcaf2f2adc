"""MultiScaleFlipAug restricted to what the batch format can carry: one scale, no flip."""

from collections.abc import Sequence

from mmdet.utils.errors import ConfigValueError

from ..builder import PIPELINES
from .compose import Compose
from .transforms import as_scale_list


@PIPELINES.register_module()
class MultiScaleFlipAug:
    """Set `scale`, `flip=False`, `flip_direction=None` and run `transforms` once.

    mmdetection wraps every output value in a list (one entry per augmentation) and the detector unwraps
    it. Our batches carry exactly one view of each image (INTERFACES.md), so this returns the single sample
    itself; several scales or `flip=True` (true test-time augmentation) are refused.
    """

    def __init__(
        self, transforms: Sequence[dict], img_scale=None, flip: bool = False, flip_direction: str = "horizontal"
    ):
        scales = as_scale_list(img_scale)
        if len(scales) != 1:
            raise ConfigValueError(f"MultiScaleFlipAug supports exactly one img_scale, got {img_scale!r}")
        if flip:
            raise ConfigValueError("MultiScaleFlipAug: flip=True (test-time flip augmentation) is not supported")
        self.img_scale = scales[0]
        self.flip_direction = flip_direction
        self.transforms = Compose(transforms)

    def __call__(self, results: dict) -> dict:
        results = dict(results)
        results["scale"] = self.img_scale
        results["flip"] = False
        results["flip_direction"] = None
        return self.transforms(results)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transforms={self.transforms!r}, img_scale={self.img_scale}, flip=False)"

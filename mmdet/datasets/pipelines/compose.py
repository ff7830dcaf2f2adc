"""Compose: run a list of transforms (config dicts or callables) in order."""

from collections.abc import Sequence
from typing import Callable, Optional, Union

from mmdet.utils.errors import ConfigKeyError

from ..builder import PIPELINES


@PIPELINES.register_module()
class Compose:
    """A transform returning None drops the sample; Compose then returns None too (the training dataset retries)."""

    def __init__(self, transforms: Sequence[Union[dict, Callable]]):
        self.transforms = []
        for transform in transforms:
            if isinstance(transform, dict):
                if "type" not in transform:
                    raise ConfigKeyError(f"pipeline step needs a 'type' key, got {dict(transform)}")
                transform = PIPELINES.build(dict(transform))
            elif not callable(transform):
                raise TypeError(f"pipeline step must be a dict or a callable, got {type(transform).__name__}")
            self.transforms.append(transform)

    def __call__(self, results: dict) -> Optional[dict]:
        for transform in self.transforms:
            results = transform(results)
            if results is None:
                return None
        return results

    def __repr__(self) -> str:
        steps = ",\n    ".join(repr(t) for t in self.transforms)
        return f"{type(self).__name__}(\n    {steps}\n)"

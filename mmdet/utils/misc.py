"""Small helpers."""

from typing import Union

import torch


def to_device(batch: dict, device: Union[str, torch.device]) -> dict:
    """Copy of `batch` with tensors and lists/tuples of tensors moved to `device`; other values (metas) untouched."""
    moved = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            moved[key] = value.to(device)
        elif isinstance(value, (list, tuple)) and value and all(torch.is_tensor(v) for v in value):
            moved[key] = type(value)(v.to(device) for v in value)
        else:
            moved[key] = value
    return moved

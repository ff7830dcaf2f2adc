"""Reading and writing mmdetection-style checkpoints ({'state_dict', 'meta'}) with architecture checks."""
import logging
import os
import pickle
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

import mmdet
from mmdet.utils.atomic_io import atomic_torch_save

_SKIPPED_BUFFERS = ("num_batches_tracked",)
_PREFIX = "module."


class CheckpointMismatchError(ValueError):
    """The checkpoint belongs to another architecture than the model it is loaded into."""


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel wrappers."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def _read(filename: str, map_location) -> dict:
    if filename.startswith(("http://", "https://")):
        return torch.hub.load_state_dict_from_url(
            filename, map_location=map_location, progress=False, weights_only=True
        )
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint file {filename!r} does not exist")
    try:
        checkpoint = torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # Older checkpoints may keep non-plain Python objects in their meta; load them fully, but say so.
        logging.getLogger("mmdet").warning(
            "checkpoint %r is not loadable with weights_only=True (%s); loading it with full unpickling", filename, error
        )
        checkpoint = torch.load(filename, map_location=map_location, weights_only=False)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"checkpoint {filename!r} holds a {type(checkpoint).__name__}; expected a dict")
    return checkpoint


def _strip_prefix(state_dict: dict) -> "OrderedDict[str, torch.Tensor]":
    """Remove a leading 'module.' (DataParallel) from every key, keeping and re-keying ``_metadata``."""
    stripped = OrderedDict((k[len(_PREFIX):] if k.startswith(_PREFIX) else k, v) for k, v in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        stripped._metadata = OrderedDict(
            ("" if k == "module" else k[len(_PREFIX):] if k.startswith(_PREFIX) else k, v) for k, v in metadata.items()
        )
    return stripped


def _is_optional(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _SKIPPED_BUFFERS


def _compare(model: nn.Module, state_dict: dict) -> Tuple[List[str], List[str], List[str]]:
    """(shape mismatches, missing keys, unexpected keys), the missing ones without num_batches_tracked."""
    own = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in state_dict and not _is_optional(k)]
    unexpected = [k for k in state_dict if k not in own]
    return mismatched, missing, unexpected


def _foreign(unexpected: List[str], model: nn.Module) -> List[str]:
    """Unexpected keys under a top-level module the model has (e.g. a deeper backbone), not unrelated extras."""
    children = {name for name, _ in model.named_children()}
    return [k for k in unexpected if k.split(".", 1)[0] in children]


def load_checkpoint(
    model: nn.Module,
    filename: str,
    map_location="cpu",
    strict: bool = False,
    logger: Optional[logging.Logger] = None,
) -> dict:
    """Load ``filename`` into ``model`` and return the whole checkpoint dict.

    Accepts ``{'state_dict': ..., 'meta': ...}`` or a bare state dict, strips a ``module.`` prefix, tolerates a missing
    ``num_batches_tracked``, and logs missing/unexpected keys. Raises :class:`CheckpointMismatchError` naming the first
    offending keys when the checkpoint is of another architecture: a shape differs on a common key, a model parameter
    or buffer is missing, or there are extra keys under one of the model's own sub-modules. With ``strict=True`` any
    unexpected key is an error too.
    """
    logger = logger or logging.getLogger("mmdet")
    model = _unwrap(model)
    checkpoint = _read(filename, map_location)
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict):
        raise ValueError(f"checkpoint {filename!r}: 'state_dict' is a {type(state_dict).__name__}; expected a dict")
    state_dict = _strip_prefix(state_dict)
    mismatched, missing, unexpected = _compare(model, state_dict)
    foreign = unexpected if strict else _foreign(unexpected, model)
    if mismatched or missing or foreign:
        problems = []
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches, first: {'; '.join(mismatched[:3])}")
        if missing:
            problems.append(f"{len(missing)} keys missing from the checkpoint, first: {', '.join(missing[:3])}")
        if foreign:
            problems.append(f"{len(foreign)} keys the model does not have, first: {', '.join(foreign[:3])}")
        raise CheckpointMismatchError(
            f"checkpoint {filename!r} does not fit {type(model).__name__} (another architecture?): " + "; ".join(problems)
        )
    absent_buffers = [k for k in model.state_dict() if _is_optional(k) and k not in state_dict]
    model.load_state_dict(state_dict, strict=False)
    if absent_buffers:
        logger.info("checkpoint %s lacks %d num_batches_tracked buffers (kept at their defaults)", filename, len(absent_buffers))
    if unexpected:
        logger.warning("checkpoint %s: unexpected keys ignored: %s", filename, ", ".join(unexpected))
    logger.info("loaded checkpoint %s into %s", filename, type(model).__name__)
    return checkpoint


def save_checkpoint(
    model: nn.Module,
    filename: str,
    meta: Optional[dict] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> None:
    """Write ``{'state_dict', 'meta'[, 'optimizer']}`` atomically (a temporary file in the same folder, then rename).

    ``meta`` gets ``mmdet_version``, ``time`` and, when the model has them, its ``CLASSES``. Keep ``meta`` to plain
    Python values: checkpoints are read back with ``weights_only=True``.
    """
    model = _unwrap(model)
    meta = dict(meta or {})
    meta.setdefault("mmdet_version", mmdet.__version__)
    meta.setdefault("time", time.asctime())
    classes = getattr(model, "CLASSES", None)
    if classes is not None:
        meta.setdefault("CLASSES", tuple(classes))
    own = model.state_dict()
    state_dict: Dict[str, torch.Tensor] = OrderedDict((k, v.detach().cpu()) for k, v in own.items())
    state_dict._metadata = getattr(own, "_metadata", OrderedDict())
    checkpoint = {"meta": meta, "state_dict": state_dict}
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    atomic_torch_save(checkpoint, filename)

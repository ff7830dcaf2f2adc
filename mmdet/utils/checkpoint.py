"""Reading and writing mmdetection-style checkpoints ({'state_dict', 'meta'}) with architecture checks."""

import logging
import os
import pickle
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Optional

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


class CheckpointFileError(ValueError):
    """The checkpoint file is empty, not a PyTorch checkpoint, truncated or otherwise unreadable."""


class NonFiniteWeightsError(ValueError):
    """The checkpoint holds NaN or Inf in floating-point tensors."""


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = 0x80
_SHOWN_NAMES = 10


def _check_file_format(filename: str) -> None:
    """Reject an empty file or one that is neither torch's zip format nor its legacy pickle format."""
    size = os.path.getsize(filename)
    if size == 0:
        raise CheckpointFileError(
            f"checkpoint file {filename!r} is empty (0 bytes); expected a file written by "
            "torch.save (an interrupted download or copy?)"
        )
    with open(filename, "rb") as f:
        head = f.read(16)
    if not (head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTOCOL_OPCODE):
        is_text = head.decode("ascii", "replace").isprintable() or head.isascii()
        kind = "a text file" if is_text else "not a PyTorch checkpoint"
        raise CheckpointFileError(
            f"checkpoint file {filename!r} ({size} bytes) is {kind}: it starts with {head!r}, "
            "expected a torch.save zip archive (b'PK\\x03\\x04') or pickle"
        )


def _torch_load(filename: str, map_location, weights_only: bool):
    """torch.load that turns a damaged file's low-level error into one naming the file."""
    try:
        return torch.load(filename, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError:
        raise
    except (EOFError, RuntimeError, KeyError, IndexError, ValueError, OSError) as error:
        size = os.path.getsize(filename)
        reason = str(error).split(". ")[0] or ("unexpected end of file" if isinstance(error, EOFError) else "no detail")
        raise CheckpointFileError(
            f"checkpoint file {filename!r} ({size} bytes) is truncated or corrupt and cannot be "
            f"read ({type(error).__name__}: {reason}); write or download it again"
        ) from error


def read_checkpoint(filename: str, map_location="cpu") -> dict:
    """Read a checkpoint file (or URL) into a dict, with an error naming the file when it cannot be read.

    Args:
        filename: a local path or an http(s) URL.
        map_location: passed to ``torch.load``.

    Returns:
        The checkpoint: ``{'state_dict', 'meta', ...}`` or a bare state dict.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointFileError: the file is empty, not a PyTorch checkpoint, truncated or corrupt.
    """
    if filename.startswith(("http://", "https://")):
        return torch.hub.load_state_dict_from_url(
            filename, map_location=map_location, progress=False, weights_only=True
        )
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint file {filename!r} does not exist")
    _check_file_format(filename)
    try:
        checkpoint = _torch_load(filename, map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # Older checkpoints may keep non-plain Python objects in their meta; load them fully, but say so.
        logging.getLogger("mmdet").warning(
            "checkpoint %r is not loadable with weights_only=True (%s); loading it with full unpickling",
            filename,
            error,
        )
        try:
            checkpoint = _torch_load(filename, map_location, weights_only=False)
        except pickle.UnpicklingError as full_error:
            raise CheckpointFileError(
                f"checkpoint file {filename!r} is truncated or corrupt and cannot be unpickled "
                f"({full_error}); write or download it again"
            ) from full_error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"checkpoint {filename!r} holds a {type(checkpoint).__name__}; expected a dict")
    return checkpoint


def non_finite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold a NaN or an Inf, in key order."""
    return [
        key
        for key, value in state_dict.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def check_finite(state_dict: Mapping[str, Any], source: str) -> None:
    """Raise :class:`NonFiniteWeightsError` naming every NaN/Inf tensor of ``state_dict`` (the first ten, then a count).

    Args:
        state_dict: name -> tensor; entries that are not floating-point tensors are skipped.
        source: the file the state comes from, for the message.
    """
    bad = non_finite_tensors(state_dict)
    if not bad:
        return
    shown = ", ".join(bad[:_SHOWN_NAMES])
    more = f" and {len(bad) - _SHOWN_NAMES} more" if len(bad) > _SHOWN_NAMES else ""
    raise NonFiniteWeightsError(
        f"checkpoint {source!r} holds NaN or Inf in {len(bad)} tensor(s): {shown}{more}; "
        "the weights are unusable (a diverged training run or a damaged file?)"
    )


def _strip_prefix(state_dict: dict) -> "OrderedDict[str, torch.Tensor]":
    """Remove a leading 'module.' (DataParallel) from every key, keeping and re-keying ``_metadata``."""
    stripped = OrderedDict((k[len(_PREFIX) :] if k.startswith(_PREFIX) else k, v) for k, v in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        stripped._metadata = OrderedDict(
            ("" if k == "module" else k[len(_PREFIX) :] if k.startswith(_PREFIX) else k, v) for k, v in metadata.items()
        )
    return stripped


def _is_optional(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _SKIPPED_BUFFERS


def _compare(model: nn.Module, state_dict: dict) -> tuple[list[str], list[str], list[str]]:
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


def _foreign(unexpected: list[str], model: nn.Module) -> list[str]:
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
    unexpected key is an error too. An unreadable file raises :class:`CheckpointFileError` and NaN or Inf in any
    floating-point tensor raises :class:`NonFiniteWeightsError`, both naming the file.
    """
    logger = logger or logging.getLogger("mmdet")
    model = _unwrap(model)
    checkpoint = read_checkpoint(filename, map_location)
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict):
        raise ValueError(f"checkpoint {filename!r}: 'state_dict' is a {type(state_dict).__name__}; expected a dict")
    state_dict = _strip_prefix(state_dict)
    check_finite(state_dict, filename)
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
            f"checkpoint {filename!r} does not fit {type(model).__name__} (another architecture?): "
            + "; ".join(problems)
        )
    absent_buffers = [k for k in model.state_dict() if _is_optional(k) and k not in state_dict]
    model.load_state_dict(state_dict, strict=False)
    if absent_buffers:
        logger.info(
            "checkpoint %s lacks %d num_batches_tracked buffers (kept at their defaults)", filename, len(absent_buffers)
        )
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
    state_dict: dict[str, torch.Tensor] = OrderedDict((k, v.detach().cpu()) for k, v in own.items())
    state_dict._metadata = getattr(own, "_metadata", OrderedDict())
    checkpoint = {"meta": meta, "state_dict": state_dict}
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    atomic_torch_save(checkpoint, filename)

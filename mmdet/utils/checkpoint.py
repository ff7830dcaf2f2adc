"""Reading and writing mmdetection-style checkpoints ({'state_dict', 'meta'}) with architecture checks.

Loading is weights-only unless the user opts out (below). A pickle can call any Python function while it is read, so
every checkpoint (float, quantized, downloaded) and every work dir's progress file goes through
:func:`read_checkpoint`, which reads it with ``torch.load(weights_only=True)``: tensors, containers and plain values
load, and so do the numpy scalars, arrays and dtypes that mmdetection writes into ``meta`` (``meta.iter`` as
``np.int64``, ``meta.hook_msgs.best_score`` as ``np.float64``), which are allowed by name (:func:`allowed_globals`).
A file whose pickle names any other function or class is refused with :class:`UnsafeCheckpointError`, naming the file
and that global, before anything of it runs.

Environment variables:
    QDROP_ALLOW_PICKLE: ``1`` (or ``true``, ``yes``, ``on``) loads a file that weights-only loading refuses with full
        unpickling, which executes whatever code the file names. Off by default; set it only for a file whose origin
        you trust. Every load it lets through logs a warning naming the file.
"""

import contextlib
import functools
import logging
import os
import pickle
import re
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

import mmdet
from mmdet.utils.atomic_io import atomic_torch_save
from mmdet.utils.errors import InputFileNotFoundError, UserError

ALLOW_PICKLE_ENV = "QDROP_ALLOW_PICKLE"
_TRUE_VALUES = ("1", "true", "yes", "on")
_TORCH_VERSION = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
_SKIPPED_BUFFERS = ("num_batches_tracked",)
_PREFIX = "module."


class CheckpointMismatchError(UserError, ValueError):
    """The checkpoint belongs to another architecture than the model it is loaded into."""


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel wrappers."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


class CheckpointFileError(UserError, ValueError):
    """The checkpoint file is empty, not a PyTorch checkpoint, truncated or otherwise unreadable."""


class UnsafeCheckpointError(CheckpointFileError):
    """The checkpoint's pickle names a function or class that weights-only loading refuses: loading it runs code.

    Attributes:
        filename: the file (or URL).
        offending_global: the global the pickle asks for, as torch names it (e.g. ``posix.system``).
    """

    def __init__(self, message: str, filename: str = "", offending_global: str = ""):
        super().__init__(message)
        self.filename = filename
        self.offending_global = offending_global


class NonFiniteWeightsError(UserError, ValueError):
    """The checkpoint holds NaN or Inf in floating-point tensors."""


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = 0x80
_SHOWN_NAMES = 10
# How torch's weights-only unpickler names what it refused: a global, an object of a class, a function it won't call.
_REFUSED_PATTERNS = (
    re.compile(r"GLOBAL ([\w.]+)"),
    re.compile(r"but got <class '([\w.]+)'>"),
    re.compile(r"unrecognized function ([^\n]+?)(?: which belongs to [^\n]*)?$", re.MULTILINE),
)


@functools.cache
def allowed_globals() -> tuple:
    """The non-tensor globals that checkpoints may name: numpy arrays, scalars and dtypes, and OrderedDict.

    Each entry is a class or function, or a ``(function, name)`` pair for a name it is pickled under; numpy's
    ``multiarray`` helpers are listed under their numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) names.
    """
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    allowed: list = [OrderedDict, np.ndarray, np.dtype]
    for name in ("scalar", "_reconstruct"):
        function = getattr(multiarray, name)
        allowed += [function, (function, f"numpy.core.multiarray.{name}"), (function, f"numpy._core.multiarray.{name}")]
    scalar_types = {np.dtype(code).type for code in np.typecodes["All"]} - {np.object_}
    allowed += sorted(scalar_types, key=lambda cls: cls.__name__)
    try:
        import numpy.dtypes as dtype_classes  # numpy >= 1.25: one class per dtype (Float64DType, ...)
    except ImportError:
        dtype_classes = None
    if dtype_classes is not None:
        found = {
            value
            for value in vars(dtype_classes).values()
            if isinstance(value, type) and issubclass(value, np.dtype) and value is not np.dtype
        }
        allowed += sorted(
            (cls for cls in found if getattr(cls, "type", None) is not np.object_), key=lambda cls: cls.__name__
        )
    return tuple(allowed)


def _allow_listed() -> contextlib.AbstractContextManager:
    """A context in which weights-only loading also accepts :func:`allowed_globals` (torch >= 2.5)."""
    context = getattr(torch.serialization, "safe_globals", None)
    if context is None:
        return contextlib.nullcontext()
    entries = allowed_globals()
    if _TORCH_VERSION < (2, 6):  # (function, name) pairs came with torch 2.6
        entries = tuple(entry for entry in entries if not isinstance(entry, tuple))
    return context(list(entries))


def pickle_allowed() -> bool:
    """Whether the environment variable ``QDROP_ALLOW_PICKLE`` permits full unpickling (off by default)."""
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in _TRUE_VALUES


def _refused_global(error: Exception) -> Optional[str]:
    """The global that torch's weights-only unpickler refused, parsed out of its message; None when it names none."""
    message = str(error)
    for pattern in _REFUSED_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1).rstrip(".")
    return None


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


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
    except (EOFError, RuntimeError, KeyError, IndexError, ValueError, OSError, struct.error) as error:
        size = os.path.getsize(filename)
        reason = str(error).split(". ")[0] or ("unexpected end of file" if isinstance(error, EOFError) else "no detail")
        raise CheckpointFileError(
            f"checkpoint file {filename!r} ({size} bytes) is truncated or corrupt and cannot be "
            f"read ({type(error).__name__}: {reason}); write or download it again"
        ) from error


def _load_weights_only(load: Callable[[bool], Any], filename: str) -> Any:
    """``load(weights_only=True)`` with :func:`allowed_globals` allowed; what it refuses is an error, or, only with
    ``QDROP_ALLOW_PICKLE=1``, ``load(weights_only=False)`` with a warning naming the file."""
    try:
        with _allow_listed():
            return load(True)
    except pickle.UnpicklingError as error:
        refused = _refused_global(error)
        if not pickle_allowed():
            if refused is None:
                raise CheckpointFileError(
                    f"checkpoint file {filename!r} is truncated or corrupt and cannot be unpickled "
                    f"({_last_line(error)}); write or download it again"
                ) from error
            raise UnsafeCheckpointError(
                f"checkpoint file {filename!r} was not loaded: its pickle asks for the global {refused}, which is "
                "not a tensor, a container or a plain value, and loading it would execute code (a pickle can run "
                "any function, a shell command included). If you trust where the file comes from, load it with "
                f"full unpickling by setting the environment variable {ALLOW_PICKLE_ENV}=1",
                filename=filename,
                offending_global=refused,
            ) from error
        logging.getLogger("mmdet").warning(
            "%s=1: loading checkpoint %r with full unpickling, which executes any code the file names "
            "(weights-only loading refused %s)",
            ALLOW_PICKLE_ENV,
            filename,
            refused or _last_line(error),
        )
    try:
        return load(False)
    except (pickle.UnpicklingError, AttributeError, ImportError) as full_error:
        raise CheckpointFileError(
            f"checkpoint file {filename!r} cannot be unpickled ({type(full_error).__name__}: {full_error}); "
            "write or download it again"
        ) from full_error


def read_checkpoint(filename: str, map_location="cpu") -> dict:
    """Read a checkpoint file (or URL) into a dict, weights-only, with an error naming the file when it cannot be read.

    Args:
        filename: a local path or an http(s) URL.
        map_location: passed to ``torch.load``.

    Returns:
        The checkpoint: ``{'state_dict', 'meta', ...}`` or a bare state dict.

    Raises:
        InputFileNotFoundError: the file does not exist (a ``FileNotFoundError``).
        UnsafeCheckpointError: the file's pickle names a global other than tensors, containers, plain values and
            numpy values, and ``QDROP_ALLOW_PICKLE`` is not set (see the module docstring).
        CheckpointFileError: the file is empty, not a PyTorch checkpoint, truncated or corrupt, or holds no dict.
    """
    if filename.startswith(("http://", "https://")):

        def load(weights_only: bool):
            return torch.hub.load_state_dict_from_url(
                filename, map_location=map_location, progress=False, weights_only=weights_only
            )

    else:
        if not os.path.isfile(filename):
            raise InputFileNotFoundError(f"checkpoint file {filename!r} does not exist")
        _check_file_format(filename)

        def load(weights_only: bool):
            return _torch_load(filename, map_location, weights_only)

    checkpoint = _load_weights_only(load, filename)
    if not isinstance(checkpoint, dict):
        raise CheckpointFileError(f"checkpoint {filename!r} holds a {type(checkpoint).__name__}; expected a dict")
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
    unexpected key is an error too. An unreadable file raises :class:`CheckpointFileError`, one whose pickle would run
    code :class:`UnsafeCheckpointError` (see :func:`read_checkpoint`), and NaN or Inf in any floating-point tensor
    raises :class:`NonFiniteWeightsError`, all naming the file.
    """
    logger = logger or logging.getLogger("mmdet")
    model = _unwrap(model)
    checkpoint = read_checkpoint(filename, map_location)
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict):
        raise CheckpointFileError(
            f"checkpoint {filename!r}: 'state_dict' is a {type(state_dict).__name__}; expected a dict"
        )
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
    Python and numpy values: checkpoints are read back weights-only (see the module docstring).
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

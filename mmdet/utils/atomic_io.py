"""Atomic file writes: a file is either its previous complete version or the new complete one, never half-written."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import torch


def _default_file_mode() -> int:
    """The mode open() would give a new file under the current umask (mkstemp would make it owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_open(filename: str, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file in the target's folder, then rename it over `filename` on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.splitext(filename)[1], dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp_path, _default_file_mode())
        os.replace(tmp_path, filename)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def atomic_torch_save(obj: Any, filename: str) -> None:
    with atomic_open(filename, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(filename: str, text: str) -> None:
    with atomic_open(filename, "w") as f:
        f.write(text)

"""Small helpers shared by the heads."""

from collections.abc import Mapping
from typing import Optional


def require(cfg: Optional[Mapping], key: str, where: str):
    """`cfg[key]` with an error that names the missing key and the config it was looked up in."""
    if cfg is None:
        raise ValueError(f"{where}: no config given, need one with key '{key}'")
    if key not in cfg:
        raise KeyError(f"{where}: config {dict(cfg)!r} lacks the key '{key}'")
    return cfg[key]

"""Config loading: the file read as data (:mod:`mmdet.utils.config_file`) into an mmengine Config, then the
MMDET_DATASETS data-root override and --cfg-options.

A ``--cfg-options`` key must name an entry the config already has (``data.test.ann_file=...``,
``data.train.pipeline.2.img_scale=...`` for a list element); a typo is an error listing the nearest existing keys.
A key written with a leading ``+`` (``+model.test_cfg.new_key=1``) adds an entry the config does not have yet.
"""

import difflib
import os
import os.path as osp
from collections.abc import Iterator
from typing import Any, Optional

from mmengine.config import Config
from mmengine.config.config import RESERVED_KEYS

from mmdet.utils.config_file import ConfigFileError, read_config_file
from mmdet.utils.errors import ConfigKeyError, InputFileNotFoundError

_PATH_KEYS = ("ann_file", "img_prefix", "seg_prefix", "proposal_file")


def _relocate(node, old_root: str, new_root: str):
    """Recursively rewrite dataset paths under `old_root` (and data_root keys equal to it) to `new_root`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _PATH_KEYS and isinstance(value, str) and value.startswith(old_root):
                node[key] = osp.join(new_root, value[len(old_root) :].lstrip("/"))
            elif key == "data_root" and value == old_root:
                node[key] = new_root
            else:
                _relocate(value, old_root, new_root)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _relocate(item, old_root, new_root)


def update_data_root(cfg: Config, new_root: Optional[str] = None) -> None:
    """Point `cfg.data` at `new_root` (default: env MMDET_DATASETS): paths that start with the config's
    `data_root` get the new prefix, and `cfg.data_root` itself is replaced."""
    new_root = new_root if new_root is not None else os.environ.get("MMDET_DATASETS")
    if not new_root:
        return
    old_root = cfg.get("data_root")
    if not old_root:
        raise ConfigKeyError(f"MMDET_DATASETS is set but the config {cfg.filename} has no top-level 'data_root'")
    if "data" in cfg:
        _relocate(cfg.data, old_root, new_root)
    cfg.data_root = new_root


NEW_KEY_PREFIX = "+"
_SHOWN_KEYS = 5


class UnknownConfigKeyError(ConfigKeyError):
    """A --cfg-options key that names no entry of the config (and is not marked new with a leading '+').

    A ``KeyError`` whose ``str()`` is the message itself (see :class:`~mmdet.utils.errors.ConfigKeyError`).
    """


def _key_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key path of a config tree (list elements by index)."""
    if isinstance(node, dict):
        children = node.items()
    elif isinstance(node, (list, tuple)):
        children = enumerate(node)
    else:
        return
    for key, child in children:
        path = f"{prefix}{key}"
        yield path
        yield from _key_paths(child, path + ".")


def _missing_part(tree: Any, parts: list[str]) -> Optional[int]:
    """Index of the first part of a dotted key that the tree does not have, or None when the whole path exists."""
    node = tree
    for index, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return index
    return None


def _unknown_key_message(cfg: Config, key: str, parts: list[str], missing: int) -> str:
    tree = cfg._cfg_dict.to_dict()
    nearest = difflib.get_close_matches(key, list(_key_paths(tree)), n=_SHOWN_KEYS, cutoff=0.6)
    parent = ".".join(parts[:missing])
    where = f"'{parent}' has no entry '{parts[missing]}'" if parent else f"there is no top-level '{parts[0]}'"
    if nearest:
        hint = "nearest existing keys: " + ", ".join(nearest)
    else:
        node = tree
        for part in parts[:missing]:
            node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
        siblings = list(node) if isinstance(node, dict) else []
        hint = (
            f"'{parent or '<top level>'}' has: {', '.join(map(str, siblings[:20]))}"
            if siblings
            else f"'{parent}' is a {type(node).__name__}, not a dict"
        )
    return (
        f"--cfg-options key '{key}' is not in the config {cfg.filename}: {where}; {hint}. "
        f"To add a new key on purpose, prefix it with '{NEW_KEY_PREFIX}': {NEW_KEY_PREFIX}{key}=..."
    )


def apply_cfg_options(cfg: Config, options: dict[str, Any]) -> None:
    """Merge --cfg-options (dotted key -> value) into `cfg`.

    Args:
        cfg: the loaded config, changed in place.
        options: dotted keys as parsed by mmengine's DictAction; a key must exist in `cfg` unless it starts with '+'.

    Raises:
        UnknownConfigKeyError: a key (without '+') that names no entry of `cfg`, with the nearest existing keys.
    """
    tree = cfg._cfg_dict
    merged = {}
    for key, value in options.items():
        if key.startswith(NEW_KEY_PREFIX):
            merged[key[len(NEW_KEY_PREFIX) :]] = value
            continue
        parts = key.split(".")
        missing = _missing_part(tree, parts)
        if missing is not None:
            raise UnknownConfigKeyError(_unknown_key_message(cfg, key, parts, missing))
        merged[key] = value
    cfg.merge_from_dict(merged)


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load an mmdetection-format config; apply MMDET_DATASETS, then the --cfg-options dict (dotted keys).

    Args:
        path: the config file (mmdetection's Python format, read as data; or JSON / YAML), `_base_` inheritance.
        cfg_options: dotted key -> value, see :func:`apply_cfg_options`.

    Returns:
        The mmengine Config.

    Raises:
        FileNotFoundError: no file at `path`.
        ConfigSyntaxError: the config or one of its base files does not parse; the message names file and line.
        UnsafeConfigError: the config uses a construct that would run code (an import, a call, an attribute).
        ConfigFileError: a config that cannot be read (an undefined name, a missing base, a key in two bases).
        UnknownConfigKeyError: a --cfg-options key the config does not have.
    """
    if not osp.isfile(path):
        raise InputFileNotFoundError(f"config file not found: {path}")
    entries = read_config_file(path)
    reserved = sorted(set(entries) & set(RESERVED_KEYS))
    if reserved:
        raise ConfigFileError(f"config file {path}: {', '.join(reserved)} cannot be a top-level key (reserved)")
    cfg = Config(entries, filename=path)
    update_data_root(cfg)
    if cfg_options:
        apply_cfg_options(cfg, cfg_options)
    return cfg

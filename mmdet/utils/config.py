"""Config loading: mmengine's Config.fromfile plus the MMDET_DATASETS data-root override and --cfg-options."""
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config

_PATH_KEYS = ("ann_file", "img_prefix", "seg_prefix", "proposal_file")


def _relocate(node, old_root: str, new_root: str):
    """Recursively rewrite dataset paths under `old_root` (and data_root keys equal to it) to `new_root`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _PATH_KEYS and isinstance(value, str) and value.startswith(old_root):
                node[key] = osp.join(new_root, value[len(old_root):].lstrip("/"))
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
        raise KeyError(f"MMDET_DATASETS is set but the config {cfg.filename} has no top-level 'data_root'")
    if "data" in cfg:
        _relocate(cfg.data, old_root, new_root)
    cfg.data_root = new_root


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load an mmdetection-format config; apply MMDET_DATASETS, then the --cfg-options dict (dotted keys)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = Config.fromfile(path)
    update_data_root(cfg)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg

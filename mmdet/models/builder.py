"""Registry and builders for every nn.Module that a config can name (mmdetection 2.x names kept).

A detector config is checked before anything of it is built (:func:`check_model_types`, called by
:func:`build_detector`): a detector, backbone, neck or head type that is not registered is an
:class:`UnsupportedModelError` naming the type, the key it sits at and the supported types of each kind. The kind of
a registered class comes from the ``mmdet.models`` package it is defined in, so newly registered classes are listed
without being named here.
"""

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from mmengine.registry import Registry

from mmdet.utils.errors import ConfigKeyError

MODELS = Registry("models", scope="qdrop_det")
# mmdetection 2.x had one registry per kind; they share one here, the builder names stay.
BACKBONES = NECKS = HEADS = ROI_EXTRACTORS = SHARED_HEADS = LOSSES = DETECTORS = MODELS

# The kind of a registered class: the sub-package of mmdet.models that defines it.
_PACKAGE_KINDS = {
    "detectors": "detector",
    "backbones": "backbone",
    "necks": "neck",
    "dense_heads": "dense head",
    "roi_heads": "RoI head",
    "losses": "loss",
}
_LISTED_KINDS = ("detector", "backbone", "neck", "dense head", "RoI head")
_HEAD_KINDS = ("dense head", "RoI head")
# Keys of a module config whose value is a module config (or a list of them) of one of these kinds.
_SLOT_KINDS = {
    "backbone": ("backbone",),
    "neck": ("neck",),
    "rpn_head": _HEAD_KINDS,
    "bbox_head": _HEAD_KINDS,
    "roi_head": _HEAD_KINDS,
    "bbox_roi_extractor": _HEAD_KINDS,
    "mask_roi_extractor": _HEAD_KINDS,
    "mask_head": _HEAD_KINDS,
    "shared_head": _HEAD_KINDS,
}
_DETECTOR = ("detector",)


class UnsupportedModelError(ConfigKeyError):
    """A model config names a type that is not registered, or one of another kind than its key needs.

    A ``KeyError`` (as mmengine's registry raises) whose ``str()`` is the message.

    Attributes:
        type_name: the unsupported type.
        key: where it sits, e.g. ``model.backbone.type``.
        source: the config file.
    """

    def __init__(self, message: str, type_name: str = "", key: str = "", source: str = ""):
        super().__init__(message)
        self.type_name = type_name
        self.key = key
        self.source = source


def model_kind(cls: Any) -> Optional[str]:
    """'detector', 'backbone', 'neck', 'dense head', 'RoI head' or 'loss' from the package of mmdet.models that
    defines ``cls``; None for a class defined elsewhere."""
    parts = str(getattr(cls, "__module__", "")).split(".")
    if len(parts) > 2 and parts[:2] == ["mmdet", "models"]:
        return _PACKAGE_KINDS.get(parts[2])
    return None


def supported_types() -> dict[str, list[str]]:
    """The registered type names of each kind (see :func:`model_kind`), sorted."""
    by_kind: dict[str, list[str]] = {kind: [] for kind in _PACKAGE_KINDS.values()}
    for name, cls in MODELS.module_dict.items():
        kind = model_kind(cls)
        if kind is not None:
            by_kind[kind].append(name)
    return {kind: sorted(names, key=str.lower) for kind, names in by_kind.items()}


def _plural(kind: str) -> str:
    return "losses" if kind == "loss" else f"{kind}s"


def _describe(kinds: Sequence[str]) -> str:
    return "head" if tuple(kinds) == _HEAD_KINDS else " or ".join(kinds)


def _supported_message(kinds: Sequence[str] = _LISTED_KINDS) -> str:
    types = supported_types()
    return "; ".join(f"{_plural(kind)}: {', '.join(types[kind]) or '(none)'}" for kind in kinds)


def _registered(name: str) -> Any:
    """The class registered as ``name`` (a scoped name through mmengine's lookup), or None."""
    cls = MODELS.module_dict.get(name)
    if cls is None and "." in name:
        try:
            cls = MODELS.get(name)
        except Exception:  # mmengine may fail to import an unknown scope: then it is not registered either
            cls = None
    return cls


def _refuse(name: str, key: str, source: str, expected: Sequence[str], problem: str) -> UnsupportedModelError:
    types = supported_types()
    close = difflib.get_close_matches(name, [n for kind in expected for n in types.get(kind, [])], n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UnsupportedModelError(
        f"{key} = {name!r} in {source} {problem}{hint}. Supported {_supported_message()}",
        type_name=name,
        key=key,
        source=source,
    )


def _check_slot(value: Any, path: str, source: str, expected: Sequence[str]) -> None:
    """Check the module config(s) at ``path``: None (no such module), one dict, or a list of dicts."""
    if isinstance(value, Mapping):
        _check_module(value, path, source, expected)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                _check_module(item, f"{path}.{index}", source, expected)


def _check_module(cfg: Mapping, path: str, source: str, expected: Sequence[str]) -> None:
    name = cfg.get("type")
    if name is None:
        raise UnsupportedModelError(
            f"{path} in {source} has no 'type'; it needs a {_describe(expected)} type. Supported "
            f"{_supported_message()}",
            key=f"{path}.type",
            source=source,
        )
    if isinstance(name, str):
        cls = _registered(name)
        if cls is None:
            raise _refuse(name, f"{path}.type", source, expected, f"is not a supported {_describe(expected)}")
        kind = model_kind(cls)
        if kind is not None and kind not in expected:
            raise _refuse(name, f"{path}.type", source, expected, f"is a {kind}, not a {_describe(expected)}")
    for key, value in cfg.items():
        if key == "type":
            continue
        if key in _SLOT_KINDS:
            _check_slot(value, f"{path}.{key}", source, _SLOT_KINDS[key])
            continue
        # Other entries are checked only when they are module configs of a listed kind (not losses, coders, ...).
        items = value if isinstance(value, (list, tuple)) else [value]
        for index, item in enumerate(items):
            if isinstance(item, Mapping) and isinstance(item.get("type"), str):
                kind = model_kind(_registered(item["type"]))
                if kind in _LISTED_KINDS:
                    where = f"{path}.{key}" if item is value else f"{path}.{key}.{index}"
                    _check_module(item, where, source, (kind,))


def check_model_types(model_cfg: dict, source: str) -> None:
    """Check that a model config names only supported detector, backbone, neck and head types, before building.

    Walks the detector ``type``, ``backbone``, ``neck`` (one or a list), ``rpn_head``, ``bbox_head``, ``roi_head``
    with its ``bbox_roi_extractor`` / ``bbox_head`` / ``mask_head`` (one or a list) and the entries of every nested
    module config whose type is a registered detector, backbone, neck or head. The ``type`` of other dicts (losses,
    coders, assigners, ``norm_cfg``) is left to the registry when they are built.

    Args:
        model_cfg: the ``model`` dict of a config.
        source: the config file, for the message.

    Raises:
        UnsupportedModelError: naming the type, its key (e.g. ``model.backbone.type``), ``source`` and the supported
            detectors, backbones, necks and heads.
    """
    if not isinstance(model_cfg, Mapping):
        raise UnsupportedModelError(
            f"model in {source} must be a dict with a detector 'type', got {type(model_cfg).__name__}", source=source
        )
    _check_module(model_cfg, "model", source, _DETECTOR)


def _build(cfg: dict, expected: Sequence[str], **defaults):
    cfg = dict(cfg)
    for key, value in defaults.items():
        if value is not None:
            cfg.setdefault(key, value)
    name = cfg.get("type")
    if isinstance(name, str) and _registered(name) is None:
        types = supported_types()
        names = [n for kind in expected for n in types[kind]]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UnsupportedModelError(
            f"{_describe(expected)} type {name!r} is not registered{hint}; supported {_supported_message(expected)}",
            type_name=name,
        )
    return MODELS.build(cfg)


def build_backbone(cfg: dict):
    return _build(cfg, ("backbone",))


def build_neck(cfg: dict):
    return _build(cfg, ("neck",))


def build_roi_extractor(cfg: dict):
    return _build(cfg, _HEAD_KINDS)


def build_shared_head(cfg: dict):
    return _build(cfg, _HEAD_KINDS)


def build_head(cfg: dict):
    return _build(cfg, _HEAD_KINDS)


def build_loss(cfg: dict):
    return _build(cfg, ("loss",))


def build_detector(
    cfg: dict, train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None, source: Optional[str] = None
):
    """Build a detector; `train_cfg`/`test_cfg` given here are only used when the model dict lacks them.

    The config's types are checked first (:func:`check_model_types`); ``source`` (the config file) is named in the
    error.
    """
    check_model_types(cfg, source or "the model config")
    return _build(cfg, _DETECTOR, train_cfg=train_cfg, test_cfg=test_cfg)

"""Normalisation and activation layers named by mmcv-style config dicts."""

from typing import Optional

from torch import nn

# Config type -> (module class, the short name mmcv gives the layer inside a ConvModule / ResNet block).
_NORM_LAYERS = {
    "BN": (nn.BatchNorm2d, "bn"),
    "BN2d": (nn.BatchNorm2d, "bn"),
    "SyncBN": (nn.SyncBatchNorm, "bn"),
    "GN": (nn.GroupNorm, "gn"),
}
_ACTIVATIONS = {
    "ReLU": nn.ReLU,
    "LeakyReLU": nn.LeakyReLU,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
    "GELU": nn.GELU,
}


def build_norm_layer(cfg: dict, num_features: int, postfix: str = "") -> tuple[str, nn.Module]:
    """Build a normalisation layer from e.g. ``dict(type='BN', requires_grad=True)``.

    Returns ``(name, layer)`` where name is ``'bn' + postfix`` (``'gn'`` for GroupNorm), the attribute name
    mmdetection stores the layer under, so that state-dict keys match the model zoo.
    ``requires_grad=False`` freezes the affine parameters.
    """
    cfg = dict(cfg)
    norm_type = cfg.pop("type", None)
    if norm_type not in _NORM_LAYERS:
        raise KeyError(f"norm_cfg type {norm_type!r} is not supported; expected one of {sorted(_NORM_LAYERS)}")
    layer_cls, short_name = _NORM_LAYERS[norm_type]
    requires_grad = cfg.pop("requires_grad", True)
    if layer_cls is nn.GroupNorm:
        if "num_groups" not in cfg:
            raise KeyError(f"norm_cfg {dict(type=norm_type, **cfg)} needs 'num_groups' for GroupNorm")
        layer = nn.GroupNorm(num_channels=num_features, **cfg)
    else:
        cfg.setdefault("eps", 1e-5)
        layer = layer_cls(num_features, **cfg)
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return short_name + str(postfix), layer


def build_activation_layer(cfg: dict) -> nn.Module:
    """Build an activation from e.g. ``dict(type='ReLU', inplace=True)``."""
    cfg = dict(cfg)
    act_type = cfg.pop("type", None)
    if act_type not in _ACTIVATIONS:
        raise KeyError(f"act_cfg type {act_type!r} is not supported; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[act_type](**cfg)


def is_norm(module: nn.Module) -> bool:
    """True for BatchNorm (any dimension, SyncBatchNorm included) and GroupNorm layers."""
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm))


def optional_cfg(cfg: Optional[dict]) -> Optional[dict]:
    """An empty dict means 'no layer', as None does."""
    return dict(cfg) if cfg else None

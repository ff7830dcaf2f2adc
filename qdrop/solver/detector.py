"""Loading a detector: the one way every command builds a detector from a config and a checkpoint."""

import logging
from typing import NamedTuple, Optional

import torch
from torch import nn

from mmdet.models import build_detector
from mmdet.utils import CheckpointMismatchError, fuse_conv_bn, load_checkpoint
from mmdet.utils.errors import UserError
from qdrop.model import is_quantized_checkpoint_file, load_quantized_checkpoint


class CheckpointKindError(UserError, ValueError):
    """A float checkpoint where a quantized one is required, or the reverse."""


class LoadedDetector(NamedTuple):
    model: nn.Module  # in eval mode
    quantized: bool  # the checkpoint was a quantized one (written by qdrop/solver/quant_coco.py)
    meta: dict  # the checkpoint's meta


def build_bare_detector(cfg) -> nn.Module:
    """The detector of a config without weights (a checkpoint or an exported graph provides them): `model.pretrained`
    and the backbone's `init_cfg` are dropped, so that nothing is downloaded or read.

    Args:
        cfg: the mmdetection config (changed: the two keys above are removed).

    Returns:
        The detector in eval mode, on the CPU.
    """
    cfg.model.pop("pretrained", None)
    if "backbone" in cfg.model:
        cfg.model.backbone.pop("init_cfg", None)
    return build_detector(cfg.model, test_cfg=cfg.get("test_cfg")).eval()


def load_detector(
    cfg,
    checkpoint: str,
    device: Optional[torch.device] = None,
    *,
    fold_bn: bool = True,
    kind: str = "any",
    logger: Optional[logging.Logger] = None,
) -> LoadedDetector:
    """The detector of a config with its checkpoint loaded, float or quantized.

    A quantized checkpoint (written by qdrop/solver/quant_coco.py; its q_config travels in its meta) re-wraps the
    float detector with that q_config and restores every quantizer; BatchNorm is then always folded.

    Args:
        cfg: the mmdetection config.
        checkpoint: a float checkpoint of that config (mmdetection model zoo or tools/train.py) or a quantized one;
            another architecture's raises CheckpointMismatchError.
        device: where the model goes (default: stays on the CPU).
        fold_bn: fold BatchNorm into the convs of a float detector (quantization needs it).
        kind: 'any', 'float' or 'quantized': the checkpoint kind the caller accepts.
        logger: receives the checkpoint loader's report.

    Returns:
        (model in eval mode with `CLASSES` from the checkpoint's meta when it has them, whether it is quantized,
        the checkpoint's meta).
    """
    if kind not in ("any", "float", "quantized"):
        raise ValueError(f"kind must be 'any', 'float' or 'quantized', got {kind!r}")
    model = build_bare_detector(cfg)
    quantized = is_quantized_checkpoint_file(checkpoint)
    if kind == "quantized" and not quantized:
        raise CheckpointKindError(
            f"{checkpoint} is a float checkpoint, but a quantized one (quantized.pth written by "
            "qdrop/solver/quant_coco.py) is required"
        )
    if kind == "float" and quantized:
        raise CheckpointKindError(
            f"{checkpoint} is a quantized checkpoint (written by qdrop/solver/quant_coco.py); this command takes "
            "the float checkpoint of the config"
        )
    try:
        if quantized:
            loaded = load_quantized_checkpoint(model, checkpoint)
            if logger is not None:
                logger.info(f"{checkpoint} is a quantized checkpoint (q_config in its meta); BatchNorm is folded")
        else:
            loaded = load_checkpoint(model, checkpoint, map_location="cpu", logger=logger)
            if fold_bn:
                fuse_conv_bn(model)
    except (ValueError, KeyError, RuntimeError) as error:
        if not quantized or isinstance(error, UserError) and not isinstance(error, CheckpointMismatchError):
            raise
        # the saved q_config wraps another architecture, or its state has other keys or shapes
        source = getattr(cfg, "filename", None) or "the config"
        raise CheckpointMismatchError(f"{checkpoint} does not fit the model of {source}: {error}") from error
    meta = dict(loaded.get("meta") or {})
    classes = meta.get("CLASSES")
    if classes is not None:
        model.CLASSES = tuple(classes)
    if device is not None:
        model.to(device)
    return LoadedDetector(model.eval(), quantized, meta)

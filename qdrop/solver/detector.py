"""The float detector a run starts from, and the float reference that reconstruction matches."""

import copy
import logging
from typing import Optional

import torch
from torch import nn

from mmdet.models import build_detector
from mmdet.utils import fuse_conv_bn, load_checkpoint
from qdrop.quantization import disable_all


def build_fp_detector(
    cfg,
    checkpoint: str,
    device: torch.device,
    logger: Optional[logging.Logger] = None,
) -> nn.Module:
    """The float detector of a config with its checkpoint loaded and BatchNorm folded into the convs.

    Args:
        cfg: the mmdetection config (its `model.pretrained` and backbone `init_cfg` are dropped: the checkpoint
            holds every weight).
        checkpoint: float checkpoint file of that config; another architecture's raises CheckpointMismatchError.
        device: where the model goes.
        logger: receives the checkpoint loader's report.

    Returns:
        The detector in eval mode on `device`, with `CLASSES` from the checkpoint's meta when it has them.
    """
    cfg.model.pop("pretrained", None)
    if "backbone" in cfg.model:
        cfg.model.backbone.pop("init_cfg", None)
    model = build_detector(cfg.model, test_cfg=cfg.get("test_cfg"))
    loaded = load_checkpoint(model, checkpoint, map_location="cpu", logger=logger)
    classes = loaded.get("meta", {}).get("CLASSES")
    if classes is not None:
        model.CLASSES = tuple(classes)
    fuse_conv_bn(model)
    return model.to(device).eval()


def float_reference(q_model: nn.Module) -> nn.Module:
    """A copy of a quantized model whose quantizers all pass their input through: the float target of
    reconstruction, with the same module names as the quantized model.

    Args:
        q_model: a model wrapped by `quantize_detector`.

    Returns:
        The copy, with gradients off.
    """
    fp_model = copy.deepcopy(q_model)
    disable_all(fp_model)
    for param in fp_model.parameters():
        param.requires_grad_(False)
    return fp_model

"""Saving and reloading a quantized detector.

A quantized checkpoint is an mmdetection-style file {'state_dict', 'meta'} whose meta holds the `q_config`: loading
re-folds BatchNorm, re-wraps the float detector with that q_config and loads the state (float weights with their
learned rounding `alpha`, used in AdaRound's hard mode; weight and activation scales and zero points), so
activation quantization is kept, not only the weights.
"""

from collections import OrderedDict
from collections.abc import Mapping
from typing import Optional, Union

import torch
from torch import nn

from mmdet.utils import CheckpointMismatchError, check_finite, fuse_conv_bn, read_checkpoint, save_checkpoint
from qdrop.config.q_config import QConfig
from qdrop.model.quantize import quantize_detector
from qdrop.quantization import enable_quantization

QUANTIZED_FORMAT = "qdrop-quantized-v1"


def quantized_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((key, value.detach().cpu()) for key, value in model.state_dict().items())


def load_quantized_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state saved by `quantized_state_dict` (after calibration) into a freshly wrapped model.

    Every key must match. AdaRound quantizers whose `alpha` is in the state come back in hard mode, as after
    reconstruction; observers end up off and fake quantization on, as after calibration.
    """
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"quantized state does not fit the quantized model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]} (another model or q_config?)"
        )
    enable_quantization(model)


def save_quantized_checkpoint(
    model: nn.Module, filename: str, q_config: Union[QConfig, Mapping], meta: Optional[dict] = None
) -> None:
    """Write {'state_dict', 'meta'} atomically; meta carries the q_config needed to rebuild the quantized model.

    Args:
        model: a calibrated (and possibly reconstructed) quantized detector.
        filename: the checkpoint file.
        q_config: the settings the model was wrapped with (a mapping is validated); stored in its YAML form
            (`QConfig.to_dict()`).
        meta: more entries of the checkpoint's meta (plain dicts, lists and scalars).
    """
    meta = dict(meta or {})
    meta.update(format=QUANTIZED_FORMAT, q_config=QConfig.from_mapping(q_config).to_dict())
    save_checkpoint(model, filename, meta=meta)


def is_quantized_checkpoint(checkpoint: Mapping) -> bool:
    return isinstance(checkpoint.get("meta"), Mapping) and checkpoint["meta"].get("format") == QUANTIZED_FORMAT


def is_quantized_checkpoint_file(filename: str) -> bool:
    """Whether `filename` was written by `save_quantized_checkpoint` (tools/test.py uses it to pick the loader)."""
    checkpoint = read_checkpoint(filename, map_location="cpu")
    return isinstance(checkpoint, Mapping) and is_quantized_checkpoint(checkpoint)


def load_quantized_checkpoint(model: nn.Module, filename: str, map_location="cpu") -> dict:
    """Turn a float detector built from the same config (BatchNorm not yet folded) into the saved quantized one.

    Args:
        model: the float detector of the checkpoint's config, changed in place; `model.CLASSES` is set from the
            checkpoint's meta when present.
        filename: a file written by `save_quantized_checkpoint`.
        map_location: where the loaded tensors go first.

    Returns:
        The checkpoint dict {'state_dict', 'meta'}.

    Raises:
        CheckpointFileError: the file is empty, truncated or not a checkpoint.
        NonFiniteWeightsError: naming every tensor (weights, scales, alphas) that holds NaN or Inf.
    """
    checkpoint = read_checkpoint(filename, map_location=map_location)
    if not is_quantized_checkpoint(checkpoint):
        raise CheckpointMismatchError(
            f"{filename} is not a quantized checkpoint written by qdrop (meta.format != "
            f"{QUANTIZED_FORMAT!r}); load float checkpoints with mmdet.utils.load_checkpoint"
        )
    check_finite(checkpoint["state_dict"], filename)
    meta = checkpoint["meta"]
    fuse_conv_bn(model)
    quantize_detector(model, QConfig.from_mapping(meta["q_config"], source=f"{filename}: meta.q_config"))
    try:
        load_quantized_state(model, checkpoint["state_dict"])
    except ValueError as err:
        raise CheckpointMismatchError(f"{filename}: {err}") from err
    if "CLASSES" in meta:
        model.CLASSES = tuple(meta["CLASSES"])
    return checkpoint

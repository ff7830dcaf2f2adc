"""Calibration: observers set every quantizer's initial range from the float model's behaviour.

Activation observers watch the float forward (fake quantization off) over this process's calibration images; their
ranges are then averaged over ranks, so that every rank starts reconstruction from the same scales. Weight observers
see each weight once.
"""
from typing import Iterable, List

import torch
from torch import nn
from tqdm import tqdm

from qdrop.model.quantize import weight_quantizers
from qdrop.quantization import enable_calibration, enable_quantization, fake_quantizers
from qdrop.solver.distributed import all_reduce_mean_, rank_and_world


def _observer(quantizer: nn.Module) -> nn.Module:
    return quantizer.activation_post_process


def set_qparams_from_observer(quantizer: nn.Module) -> None:
    """Copy the observer's current range into the quantizer's scale and zero point (shapes follow the observer)."""
    observer = _observer(quantizer)
    qparams = observer.calculate_qparams(observer.min_val, observer.max_val)
    with torch.no_grad():
        for name, value in zip(("scale", "zero_point"), qparams):
            current = getattr(quantizer, name)
            value = value.reshape(-1).to(device=current.device, dtype=current.dtype)
            if current.shape == value.shape:
                current.copy_(value)
            else:
                current.data = value.clone()


def _average_observer_ranges(quantizers: List[nn.Module]) -> None:
    for quantizer in quantizers:
        observer = _observer(quantizer)
        if not torch.isfinite(observer.min_val).all() or not torch.isfinite(observer.max_val).all():
            raise RuntimeError(f"{type(observer).__name__} saw no data during calibration")
        all_reduce_mean_([observer.min_val, observer.max_val])
        set_qparams_from_observer(quantizer)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[dict], device: torch.device, run_heads: bool = False,
              show_progress: bool = True) -> None:
    """Set the ranges of every quantizer of `model`; afterwards observers are off and fake quantization is on.

    `batches` hold `img` (and `img_metas` for `run_heads`). The observers watch `extract_feat`, or the whole test
    forward with `run_heads` (needed when the heads are quantized).
    """
    enable_calibration(model, "activation")
    activations = [q for _, q in fake_quantizers(model, "activation")]
    rank, _ = rank_and_world()
    for batch in tqdm(batches, desc="calibrate", disable=not show_progress or rank != 0, dynamic_ncols=True):
        img = batch["img"].to(device)
        if run_heads:
            model.simple_test(img, batch["img_metas"])
        else:
            model.extract_feat(img)
    _average_observer_ranges(activations)
    observe_weights(model)


@torch.no_grad()
def observe_weights(model: nn.Module) -> None:
    """Weight observers see each weight once; then every quantizer quantizes and no observer runs."""
    enable_calibration(model, "weight")
    for layer, quantizer in weight_quantizers(model):
        quantizer(layer.weight)
    enable_quantization(model)


def copy_activation_calibration(source: nn.Module, target: nn.Module) -> None:
    """Give `target` the calibrated activation quantizers of `source`, a model wrapped from the same detector
    with the same `a_qconfig` (activation observers watch the float model, so the weight bits do not matter)."""
    source_quantizers = dict(fake_quantizers(source, "activation"))
    for name, quantizer in fake_quantizers(target, "activation"):
        source_quantizer = source_quantizers.get(name)
        if source_quantizer is None or _describe(source_quantizer) != _describe(quantizer):
            raise ValueError(f"activation quantizer {name} differs between the models: calibrate instead")
        quantizer.load_state_dict(source_quantizer.state_dict())


def _describe(quantizer: nn.Module) -> tuple:
    return (type(quantizer), type(quantizer.activation_post_process), quantizer.bit, quantizer.symmetric,
            quantizer.ch_axis)

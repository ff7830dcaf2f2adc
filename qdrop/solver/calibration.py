"""Calibration: observers set every quantizer's initial range from the float model's behaviour.

Activation observers watch the float forward (fake quantization off) over this process's calibration images; their
ranges are then averaged over ranks, so that every rank starts reconstruction from the same scales. Weight observers
see each weight once.
"""
from typing import Iterable, List

import torch
from torch import nn
from tqdm import tqdm

from mmdet.utils import all_reduce_mean_, get_dist_info
from qdrop.quantization import enable_calibration, enable_quantization, fake_quantizers, weight_quantized_layers


def _observer(quantizer: nn.Module) -> nn.Module:
    return quantizer.activation_post_process


def _average_observer_ranges(quantizers: List[nn.Module]) -> None:
    for quantizer in quantizers:
        observer = _observer(quantizer)
        if not torch.isfinite(observer.min_val).all() or not torch.isfinite(observer.max_val).all():
            raise RuntimeError(f"{type(observer).__name__} saw no data during calibration")
        all_reduce_mean_([observer.min_val, observer.max_val])
        quantizer.set_qparams_from_observer()


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[dict], device: torch.device, run_heads: bool = False,
              show_progress: bool = True) -> None:
    """Set the ranges of every quantizer of `model`; afterwards observers are off and fake quantization is on.

    Args:
        model: a quantized detector; activation observers watch its float forward (fake quantization off).
        batches: this rank's calibration batches with `img` (B, 3, H, W) and, for `run_heads`, `img_metas`.
        device: where the images go.
        run_heads: observe the whole test forward instead of `extract_feat` (needed when the heads are quantized).
        show_progress: a progress bar on rank 0.

    Returns:
        None; the activation ranges are averaged over ranks, the weight observers see each weight once.
    """
    enable_calibration(model, "activation")
    activations = [q for _, q in fake_quantizers(model, "activation")]
    rank, _ = get_dist_info()
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
    for layer, quantizer in weight_quantized_layers(model):
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

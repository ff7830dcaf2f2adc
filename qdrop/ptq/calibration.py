"""Calibration: observers set every quantizer's initial range from the float model's behaviour.

Activation observers watch the float forward (fake quantization off) over this process's calibration images; their
ranges are then averaged over ranks, so that every rank starts reconstruction from the same scales. Weight observers
see each weight once.
"""

from collections.abc import Iterable, Sequence
from typing import Optional

import torch
from torch import nn
from tqdm import tqdm

from mmdet.utils import all_reduce_mean_, get_dist_info
from mmdet.utils.errors import UserError
from qdrop.config.q_config import QConfig
from qdrop.quantization import enable_calibration, enable_quantization, fake_quantizers, weight_quantized_layers


def _observer(quantizer: nn.Module) -> nn.Module:
    return quantizer.activation_post_process


class NonFiniteCalibrationError(UserError, RuntimeError):
    """The float model's activations, or a range or scale computed from them, hold NaN or Inf."""


def _is_finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def _check_scale(name: str, quantizer: nn.Module) -> None:
    if not _is_finite(quantizer.scale) or not _is_finite(quantizer.zero_point):
        raise NonFiniteCalibrationError(
            f"calibration gave {name} a non-finite scale or zero point (scale {quantizer.scale.flatten()[:4].tolist()})"
        )


def _average_observer_ranges(quantizers: list[tuple[str, nn.Module]]) -> None:
    for name, quantizer in quantizers:
        observer = _observer(quantizer)
        all_reduce_mean_([observer.min_val, observer.max_val])
        if not _is_finite(observer.min_val) or not _is_finite(observer.max_val):
            if bool((observer.min_val == float("inf")).all() and (observer.max_val == float("-inf")).all()):
                raise RuntimeError(f"{name}: {type(observer).__name__} saw no data during calibration")
            raise NonFiniteCalibrationError(
                f"calibration gave {name} a non-finite range (min "
                f"{observer.min_val.flatten()[:4].tolist()}, max "
                f"{observer.max_val.flatten()[:4].tolist()})"
            )
        quantizer.set_qparams_from_observer()
        _check_scale(name, quantizer)


def _refuse_non_finite_input(name: str):
    """A forward pre-hook that stops calibration when the quantizer's input holds NaN or Inf."""

    def hook(module: nn.Module, inputs: tuple) -> None:
        if not _is_finite(inputs[0]):
            raise NonFiniteCalibrationError(
                f"calibration stopped: the float model's activations at {name} hold NaN "
                "or Inf (weights or inputs that overflow before this layer?)"
            )

    return hook


@torch.no_grad()
def calibrate(
    model: nn.Module, batches: Iterable[dict], device: torch.device, run_heads: bool = False, show_progress: bool = True
) -> None:
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
    activations = list(fake_quantizers(model, "activation"))
    hooks = [quantizer.register_forward_pre_hook(_refuse_non_finite_input(name)) for name, quantizer in activations]
    rank, _ = get_dist_info()
    try:
        for batch in tqdm(batches, desc="calibrate", disable=not show_progress or rank != 0, dynamic_ncols=True):
            img = batch["img"].to(device)
            if run_heads:
                model.simple_test(img, batch["img_metas"])
            else:
                model.extract_feat(img)
    finally:
        for hook in hooks:
            hook.remove()
    _average_observer_ranges(activations)
    observe_weights(model)


@torch.no_grad()
def observe_weights(model: nn.Module) -> None:
    """Weight observers see each weight once; then every quantizer quantizes and no observer runs."""
    enable_calibration(model, "weight")
    names = {id(quantizer): name for name, quantizer in fake_quantizers(model, "weight")}
    for layer, quantizer in weight_quantized_layers(model):
        quantizer(layer.weight)
        _check_scale(names.get(id(quantizer), type(layer).__name__), quantizer)
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
    return (
        type(quantizer),
        type(quantizer.activation_post_process),
        quantizer.bit,
        quantizer.symmetric,
        quantizer.ch_axis,
    )


def shares_calibration(first: QConfig, second: QConfig) -> bool:
    """Whether a model calibrated under `first` can lend its activation ranges to one under `second`: activation
    observers watch the float model, so only the activation quantizers, the images and the observed forward
    (heads or not) matter, not the weights."""
    return (first.a_qconfig, first.calibrate, first.quant_head) == (
        second.a_qconfig,
        second.calibrate,
        second.quant_head,
    )


def run_calibration(
    model: nn.Module,
    batches: Sequence[dict],
    q_config: QConfig,
    device: torch.device,
    calibrated: Optional[nn.Module] = None,
    show_progress: bool = True,
) -> None:
    """Set every quantizer's range; afterwards fake quantization is on.

    Args:
        model: a quantized model.
        batches: this rank's calibration batches (`img` (B, 3, H, W), `img_metas`).
        q_config: the model's q_config (`quant_head` runs the heads while observing).
        device: where the batches go.
        calibrated: a model wrapped from the same detector and calibrated on the same batches under a q_config
            that `shares_calibration` with `q_config`: its activation ranges are copied and only the weights are
            observed.
        show_progress: a progress bar on rank 0.
    """
    if calibrated is None:
        calibrate(model, batches, device, run_heads=q_config.quant_head, show_progress=show_progress)
    else:
        copy_activation_calibration(calibrated, model)
        observe_weights(model)

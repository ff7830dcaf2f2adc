"""The steps of a QDrop run after the float detector is built: wrap, calibrate, reconstruct, evaluate.

qdrop/solver/quant_coco.py runs them once; exp/demo.py runs them per model and setting, sharing calibration.
"""

import dataclasses
import logging
from collections.abc import Sequence
from typing import Callable, Optional

import torch
from torch import nn

from mmdet.apis import evaluation_kwargs, multi_gpu_test
from qdrop.analysis.report import UnitReconstruction
from qdrop.model import quantize_detector
from qdrop.q_config import QConfig
from qdrop.solver.calibration import calibrate, copy_activation_calibration, observe_weights
from qdrop.solver.data import TestData
from qdrop.solver.detector import float_reference
from qdrop.solver.recon import reconstruct


def wrap(model: nn.Module, q_config: QConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Quantize a float detector in place and take its float reference.

    Args:
        model: the float detector (BatchNorm folded); it becomes the quantized one.
        q_config: the quantizer settings.
        device: where the quantized model goes.

    Returns:
        (the quantized model, its float reference with the same module names).
    """
    q_model = quantize_detector(model, q_config).to(device)
    return q_model, float_reference(q_model)


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


def run_reconstruction(
    model: nn.Module,
    reference: nn.Module,
    batches: Sequence[dict],
    q_config: QConfig,
    *,
    device: torch.device,
    seed: int,
    logger: Optional[logging.Logger] = None,
    drop_prob: Optional[float] = None,
    start_unit: int = 0,
    on_unit_done: Optional[Callable[[int, list[str]], None]] = None,
    results: Optional[list[UnitReconstruction]] = None,
    show_progress: bool = True,
) -> list[str]:
    """Reconstruct every unit in forward order (none when `recon.iters` is 0).

    Args:
        model: the calibrated quantized model, changed in place.
        reference: its float reference, taken before any reconstruction.
        batches: this rank's calibration batches (`img` (B, 3, H, W)).
        q_config: `recon` holds the schedule.
        device: the compute device.
        seed: the run's seed.
        logger: receives one line per unit.
        drop_prob: replaces `recon.drop_prob` when given (1.0 is BRECQ).
        start_unit: units before it are reconstructed already (a resumed run).
        on_unit_done: called with (next unit, finished unit names) after each unit.
        results: receives what reconstruction did to each unit (errors before and after, loss curve).
        show_progress: progress bars on rank 0.

    Returns:
        The names of the reconstructed units, in order.
    """
    recon = q_config.recon
    if drop_prob is not None:
        recon = dataclasses.replace(recon, drop_prob=drop_prob)
    if recon.iters == 0:
        if logger is not None:
            logger.info("recon.iters is 0: no reconstruction (round-to-nearest weights, calibrated scales)")
        return []
    images = [batch["img"] for batch in batches]
    return reconstruct(
        model,
        reference,
        images,
        recon,
        device=device,
        seed=seed,
        logger=logger,
        start_unit=start_unit,
        on_unit_done=on_unit_done,
        results=results,
        show_progress=show_progress,
    )


def evaluate(
    model: nn.Module,
    test_data: TestData,
    cfg,
    metrics: Sequence[str],
    logger: Optional[logging.Logger] = None,
    show_progress: bool = True,
) -> Optional[dict]:
    """COCO metrics of a model on the test split; every rank runs its shard.

    Args:
        model: the detector to evaluate.
        test_data: the test split and its loader.
        cfg: the config, whose `evaluation` dict gives the keyword arguments of `dataset.evaluate`.
        metrics: e.g. ['bbox'].
        logger: receives the evaluation report.
        show_progress: a progress bar on rank 0.

    Returns:
        The metrics by name on rank 0 (e.g. bbox_mAP, bbox_mAP_50, ...); None on the other ranks.
    """
    results = multi_gpu_test(model, test_data.loader, show_progress=show_progress)
    if results is None:
        return None
    return dict(test_data.dataset.evaluate(results, logger=logger, **evaluation_kwargs(cfg, metrics)))

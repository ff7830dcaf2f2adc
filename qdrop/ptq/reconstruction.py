"""Block reconstruction (BRECQ, with QDrop's random dropping of activation quantization).

Each QuantizedLayer / QuantizedBlock is reconstructed in forward order against the float model: AdaRound's
rounding variables (Adam, lr `round_lr`, 1e-3 by default) and the LSQ activation scales (Adam at `scale_lr`, cosine
schedule to 0; on the fast path both Adams run fused) minimise the output error plus AdaRound's rounding
regulariser. With `drop_prob` p < 1 the unit's input and every activation quantizer inside it keep the quantized
value with probability p, element-wise, else the float one.
"""

import copy
import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Callable, Optional

import torch
from torch import nn
from tqdm import tqdm

from mmdet.utils import all_reduce_mean_, get_dist_info
from mmdet.utils.errors import UserError
from qdrop.config.q_config import QConfig, ReconConfig
from qdrop.model import quantization_units, quantize_detector
from qdrop.ptq.cache import ReconCache
from qdrop.ptq.capture import capture_input, capture_input_output, forward_order
from qdrop.ptq.record import ReconstructionRecord, UnitReconstruction
from qdrop.quantization import (
    AdaRoundFakeQuantize,
    disable_all,
    fake_quantizers,
    set_fast_path,
    weight_quantized_layers,
)
from qdrop.quantization.functional import draw_keep
from qdrop.quantization.fused import mix

ERROR_BATCH_SIZE = 8  # images per forward when measuring a unit's output error


class TemperatureDecay:
    """The regulariser's exponent b: b_range[0] during warm-up, then falling linearly to b_range[1]."""

    def __init__(self, iters: int, warm_up: float, b_range: tuple[float, float]):
        self.iters = iters
        self.start = warm_up * iters
        self.b_start, self.b_end = b_range

    def __call__(self, step: int) -> float:
        if step < self.start:
            return self.b_start
        progress = (step - self.start) / max(self.iters - self.start, 1)
        return self.b_end + (self.b_start - self.b_end) * max(0.0, 1.0 - progress)


def rounding_regulariser(quantizers: Sequence[nn.Module], b: float) -> torch.Tensor:
    """sum(1 - |2h - 1|^b) over every rounding variable: pushes h(alpha) to 0 or 1."""
    return sum(q.round_loss(b) for q in quantizers)


def output_error_sum(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum over channels of the squared error, summed over the other dims, and the number of those positions."""
    per_position = (output - target).pow(2).sum(1)
    return per_position.sum(), per_position.numel()


def unit_seed(seed: int, unit_index: int, rank: int) -> int:
    """A fixed seed per (run seed, unit, rank), so a resumed run draws what an uninterrupted one draws."""
    return (seed * 1_000_003 + unit_index * 10_007 + rank) % (2**63)


def build_cache(
    q_model: nn.Module,
    fp_model: nn.Module,
    q_unit: nn.Module,
    fp_unit: nn.Module,
    images: Sequence[torch.Tensor],
    cfg: ReconConfig,
    device: torch.device,
) -> ReconCache:
    cache = ReconCache(
        device, keep_on_device=cfg.keep_gpu, dtype=cfg.cache_torch_dtype, keep_fp_input=cfg.drop_prob < 1.0
    )
    for img in images:
        img = img.to(device)
        quant_input = capture_input(q_model, q_unit, img)
        fp_input, fp_output = capture_input_output(fp_model, fp_unit, img)
        cache.add(quant_input, fp_input, fp_output)
    return cache


@torch.no_grad()
def unit_output_error(unit: nn.Module, cache: ReconCache) -> float:
    """Mean over positions (and ranks) of the channel-summed squared error of the unit on its quantized input."""
    total = torch.zeros(2, dtype=torch.float64, device=cache.device)  # on the device: NCCL reduces no host tensors
    for groups in cache.all_batches(ERROR_BATCH_SIZE):
        for group in groups:
            error, positions = output_error_sum(unit(group.quant_input), group.fp_output)
            total[0] += error.double()
            total[1] += positions
    all_reduce_mean_([total])
    return (total[0] / total[1]).item()


class NonFiniteReconstructionError(UserError, RuntimeError):
    """A unit's output error, loss or quantization parameters became NaN or Inf."""


def check_finite_unit(unit: nn.Module, output_error: float, stage: str) -> None:
    """Raise NonFiniteReconstructionError when the unit's output error or any quantizer parameter or buffer (scale,
    zero point, alpha) is NaN or Inf, naming the first offending tensors."""
    if not math.isfinite(output_error):
        raise NonFiniteReconstructionError(
            f"output error {output_error} {stage} (its quantized input or float target holds NaN or Inf)"
        )
    bad = [
        f"{name}.{key}"
        for name, quantizer in fake_quantizers(unit)
        for key, value in [*quantizer.named_parameters(recurse=False), *quantizer.named_buffers(recurse=False)]
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise NonFiniteReconstructionError(f"non-finite quantization parameters {stage}: {', '.join(bad[:5])}")


def _set_drop_prob(unit: nn.Module, drop_prob: float) -> None:
    for _, quantizer in fake_quantizers(unit, "activation"):
        quantizer.drop_prob = drop_prob


def _adaround_quantizers(unit: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    return [(layer, q) for layer, q in weight_quantized_layers(unit) if isinstance(q, AdaRoundFakeQuantize)]


def harden_weights(unit: nn.Module) -> None:
    """End AdaRound for the unit: its quantizers round with alpha >= 0 from now on (AdaRound's hard mode)."""
    for _, quantizer in _adaround_quantizers(unit):
        if quantizer.adaround:
            quantizer.soft_targets = False


def _mix(quant: torch.Tensor, fp: Optional[torch.Tensor], drop_prob: float, fast: bool) -> torch.Tensor:
    if drop_prob >= 1.0:
        return quant
    if fast:
        return mix(quant, fp, drop_prob)
    return torch.where(draw_keep(quant, drop_prob), quant, fp)


def training_forward(
    unit: nn.Module, cfg: ReconConfig
) -> Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]:
    """The unit's forward during reconstruction, with the input mixed by `drop_prob`: on the fused path or the
    plain one (`recon.fast`), compiled with torch.compile (`recon.compile`), convolutions under autocast
    (`recon.amp`; the quantizers compute in float32)."""
    module = torch.compile(unit) if cfg.compile else unit
    amp_dtype = cfg.amp_torch_dtype

    def forward(quant_input: torch.Tensor, fp_input: Optional[torch.Tensor]) -> torch.Tensor:
        with torch.autocast(quant_input.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return module(_mix(quant_input, fp_input, cfg.drop_prob, cfg.fast))

    return forward


def _average_gradients(params: Sequence[torch.Tensor]) -> None:
    grads = []
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grads.append(param.grad)
    all_reduce_mean_(grads)


def reconstruct_unit(
    unit: nn.Module,
    cache: ReconCache,
    cfg: ReconConfig,
    seed: int,
    show_progress: bool = True,
    desc: str = "",
) -> tuple[float, float, tuple[tuple[int, float], ...]]:
    """Learn the unit's rounding and activation scales on its cached inputs and outputs.

    Args:
        unit: a quantized layer or block, calibrated; its AdaRound quantizers end in hard mode and its drop_prob
            back at 1.
        cache: per image, the unit's input in the quantized model (N, C, H, W), its float output (N, C', H', W')
            and, when drop_prob < 1, its float input.
        cfg: the schedule (`iters` steps of `batch_size` images, learning rates, regulariser, drop_prob).
        seed: seeds the image draw and the drop masks (e.g. `unit_seed(run seed, unit index, rank)`).
        show_progress: a progress bar on rank 0.
        desc: the progress bar's label.

    Returns:
        The last logged step's reconstruction loss and loss with the rounding regulariser (NaN, NaN when the unit
        has nothing learnable), and the loss curve: (step, reconstruction loss) every 50 steps and at the last
        step.
    """
    rank, _ = get_dist_info()
    torch.manual_seed(seed)
    sampler = torch.Generator().manual_seed(seed)
    for param in unit.parameters():
        param.requires_grad_(False)
    adaround = _adaround_quantizers(unit)
    for layer, quantizer in adaround:
        quantizer.init(layer.weight.data, cfg.round_mode)
    rounding_params = [q.alpha for _, q in adaround]
    adaround_ids = {id(q) for _, q in adaround}
    scale_params = [p for _, q in fake_quantizers(unit, "activation") for p in q.parameters()]
    scale_params += [p for _, q in weight_quantized_layers(unit) if id(q) not in adaround_ids for p in q.parameters()]
    if not rounding_params and not scale_params:
        return math.nan, math.nan, ()  # nothing learnable (fixed quantizers only)
    for param in rounding_params + scale_params:
        param.requires_grad_(True)
    optimizers, scheduler = [], None
    set_fast_path(unit, cfg.fast)
    fused_adam = cfg.fast  # one kernel per optimizer step; the same update up to float rounding
    if rounding_params:
        optimizers.append(torch.optim.Adam(rounding_params, lr=cfg.round_lr, fused=fused_adam))
    if scale_params:
        scale_optimizer = torch.optim.Adam(scale_params, lr=cfg.scale_lr, fused=fused_adam)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(scale_optimizer, T_max=cfg.iters, eta_min=0.0)
        optimizers.append(scale_optimizer)
    _set_drop_prob(unit, cfg.drop_prob)
    temperature = TemperatureDecay(cfg.iters, cfg.warm_up, cfg.b_range)
    adaround_quantizers = [q for _, q in adaround]
    loss_value = reconstruction_value = math.nan
    forward = training_forward(unit, cfg)
    curve: list[tuple[int, float]] = []
    bar = tqdm(range(cfg.iters), desc=desc, disable=not show_progress or rank != 0, leave=False, dynamic_ncols=True)
    for step in bar:
        images = torch.randperm(len(cache), generator=sampler)[: cfg.batch_size]
        error, positions = 0.0, 0
        for group in cache.gather(images.tolist()):
            group_error, group_positions = output_error_sum(forward(group.quant_input, group.fp_input), group.fp_output)
            error, positions = error + group_error, positions + group_positions
        reconstruction_loss = error / positions
        loss = reconstruction_loss
        if step >= temperature.start and adaround_quantizers:
            loss = loss + cfg.weight * rounding_regulariser(adaround_quantizers, temperature(step))
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=False)
        loss.backward()
        _average_gradients(rounding_params + scale_params)
        for optimizer in optimizers:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if step % 50 == 0 or step == cfg.iters - 1:
            loss_value, reconstruction_value = loss.item(), reconstruction_loss.item()
            bar.set_postfix(loss=f"{loss_value:.4g}", rec=f"{reconstruction_value:.4g}")
            curve.append((step, reconstruction_value))
            if not math.isfinite(loss_value):
                bar.close()
                raise NonFiniteReconstructionError(f"the loss became {loss_value} at step {step}")
    bar.close()
    harden_weights(unit)
    _set_drop_prob(unit, 1.0)
    for param in unit.parameters():
        param.requires_grad_(False)
    return reconstruction_value, loss_value, tuple(curve)


def reconstruct(
    q_model: nn.Module,
    fp_model: nn.Module,
    images: Sequence[torch.Tensor],
    cfg: ReconConfig,
    *,
    device: torch.device,
    seed: int,
    logger: Optional[logging.Logger] = None,
    start_unit: int = 0,
    on_unit_done: Optional[Callable[[int, list[str]], None]] = None,
    show_progress: bool = True,
) -> ReconstructionRecord:
    """Reconstruct every unit that extract_feat runs, in forward order, from `start_unit` on.

    Quantized heads (`quant_head: True`) are not reconstructed: they keep round-to-nearest weights and their
    calibrated activation scales.

    Args:
        q_model: the calibrated quantized detector, changed in place.
        fp_model: `float_reference(q_model)` taken before any reconstruction.
        images: this rank's calibration batches, each (B, 3, H, W).
        cfg: the `recon` settings; `iters` must be at least 1.
        device: the compute device.
        seed: the run's seed; each unit draws from `unit_seed(seed, unit index, rank)`, so a resumed run draws
            what an uninterrupted one draws.
        logger: receives one line per unit (output error before and after, losses, cache size).
        start_unit: the units before it are reconstructed already.
        on_unit_done: called after each unit with (next unit, finished unit names), e.g. to save progress.
        show_progress: progress bars on rank 0.

    Returns:
        The names of all units in forward order, and for each unit reconstructed in this call its output error
        before and after and its loss curve.
    """
    if cfg.iters <= 0:
        raise ValueError(f"recon.iters={cfg.iters}: reconstruction needs at least one iteration")
    rank, _ = get_dist_info()
    fp_units = dict(fp_model.named_modules())
    units = forward_order(q_model, quantization_units(q_model), images[0].to(device))
    log = logger.info if logger is not None else (lambda message: None)
    reconstructed: list[UnitReconstruction] = []
    for index, (name, q_unit) in enumerate(units):
        if index < start_unit:
            continue
        cache = build_cache(q_model, fp_model, q_unit, fp_units[name], images, cfg, device)
        where = f"unit {index + 1}/{len(units)} {name}"
        try:
            error_before = unit_output_error(q_unit, cache)
            check_finite_unit(q_unit, error_before, "before reconstruction")
            rec_loss, loss, curve = reconstruct_unit(
                q_unit,
                cache,
                cfg,
                seed=unit_seed(seed, index, rank),
                show_progress=show_progress,
                desc=f"recon {where}",
            )
            error_after = unit_output_error(q_unit, cache)
            check_finite_unit(q_unit, error_after, "after reconstruction")
        except NonFiniteReconstructionError as error:
            raise NonFiniteReconstructionError(
                f"reconstruction of {where} stopped: {error}; the {index} unit(s) before it stay saved and a "
                "rerun resumes after them"
            ) from None
        log(
            f"unit {index + 1}/{len(units)} {name}: output error {error_before:.6g} -> {error_after:.6g} "
            f"(last step: reconstruction loss {rec_loss:.6g}, with regulariser {loss:.6g}; "
            f"cache {cache.nbytes() / 2**20:.1f} MiB)"
        )
        del cache
        reconstructed.append(UnitReconstruction(name, error_before, error_after, curve))
        if on_unit_done is not None:
            on_unit_done(index + 1, [unit_name for unit_name, _ in units[: index + 1]])
    return ReconstructionRecord(tuple(name for name, _ in units), tuple(reconstructed))


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
    show_progress: bool = True,
) -> ReconstructionRecord:
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
        show_progress: progress bars on rank 0.

    Returns:
        The units in forward order and what reconstruction did to those reconstructed in this call (no unit
        when `recon.iters` is 0).
    """
    recon = q_config.recon
    if drop_prob is not None:
        recon = dataclasses.replace(recon, drop_prob=drop_prob)
    if recon.iters == 0:
        if logger is not None:
            logger.info("recon.iters is 0: no reconstruction (round-to-nearest weights, calibrated scales)")
        return ReconstructionRecord()
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
        show_progress=show_progress,
    )

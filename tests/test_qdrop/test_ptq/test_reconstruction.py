"""Block reconstruction: error reduction, QDrop's mixing, the schedules, the cache, and resume."""

import copy
import dataclasses

import pytest
import torch

from helpers.qdrop_models import faster_rcnn_cfg, fused_detector, q_config, random_batches, retinanet_cfg
from qdrop.config.q_config import ReconConfig
from qdrop.model import quantize_detector
from qdrop.ptq import float_reference
from qdrop.ptq.cache import ReconCache
from qdrop.ptq.calibration import calibrate
from qdrop.ptq.reconstruction import (
    TemperatureDecay,
    build_cache,
    reconstruct,
    reconstruct_unit,
    rounding_regulariser,
    unit_output_error,
)
from qdrop.quantization import AdaRoundFakeQuantize, MSEObserver, fake_quantizers
from qdrop.quantization.functional import fake_quantize
from qdrop.solver.progress import ProgressFileError, ReconProgress

CPU = torch.device("cpu")


def _calibrated(model_cfg, config, batches):
    model = quantize_detector(fused_detector(model_cfg), config)
    fp_model = float_reference(model)
    calibrate(model, batches, CPU, show_progress=False)
    return model, fp_model


def _unit(model, name):
    return model.get_submodule(name)


def test_reconstruction_lowers_block_error_against_round_to_nearest():
    config = q_config(w_bit=2, a_bit=4, iters=120, drop_prob=1.0, scale_lr=1e-3, round_lr=5e-2)
    batches = random_batches(1)
    model, fp_model = _calibrated(retinanet_cfg(18), config, batches)
    cfg = ReconConfig.from_mapping(config["recon"])
    name = "backbone.layer1.0"
    images = [b["img"] for b in batches]
    cache = build_cache(model, fp_model, _unit(model, name), _unit(fp_model, name), images, cfg, CPU)
    nearest_error = unit_output_error(_unit(model, name), cache)
    reconstruct_unit(_unit(model, name), cache, cfg, seed=0, show_progress=False)
    assert unit_output_error(_unit(model, name), cache) < 0.9 * nearest_error
    # afterwards: weights hard-rounded (alpha >= 0), dropping off
    layer = _unit(model, name).conv1.module
    quantizer = layer.weight_fake_quant
    assert not quantizer.soft_targets
    assert torch.equal(quantizer(layer.weight), quantizer.get_hard_value(layer.weight))
    assert all(q.drop_prob == 1.0 for _, q in fake_quantizers(_unit(model, name), "activation"))


def test_fast_and_plain_reconstruction_agree():
    """The fast path (fused quantizers, fused Adam) learns what the plain path learns, up to float rounding."""
    config = q_config(w_bit=2, a_bit=4, iters=5, drop_prob=0.5, warm_up=0.0, scale_lr=1e-3, round_lr=1e-2)
    batches = random_batches(1)
    model, fp_model = _calibrated(retinanet_cfg(18), config, batches)
    name = "backbone.layer1.0"
    images = [b["img"] for b in batches]
    learned = {}
    for fast in (False, True):
        cfg = dataclasses.replace(ReconConfig.from_mapping(config["recon"]), fast=fast)
        unit = copy.deepcopy(_unit(model, name))
        cache = build_cache(model, fp_model, _unit(model, name), _unit(fp_model, name), images, cfg, CPU)
        loss, _, _ = reconstruct_unit(unit, cache, cfg, seed=0, show_progress=False)
        learned[fast] = (loss, unit_output_error(unit, cache), {k: v.clone() for k, v in unit.state_dict().items()})
    (plain_loss, plain_error, plain_state), (fast_loss, fast_error, fast_state) = learned[False], learned[True]
    assert fast_loss == pytest.approx(plain_loss, rel=1e-4) and fast_error == pytest.approx(plain_error, rel=1e-4)
    for key, value in plain_state.items():
        if key.endswith("alpha") or key.endswith("scale"):
            assert (fast_state[key] - value).abs().mean() < 1e-4 * max(1.0, value.abs().mean().item()), key


def test_drop_prob_mixes_block_input_and_inner_activations():
    config = q_config(iters=3, drop_prob=0.5)
    batches = random_batches(1)
    model, fp_model = _calibrated(faster_rcnn_cfg(50), config, batches)
    cfg = ReconConfig.from_mapping(config["recon"])
    name = "backbone.layer2.0"
    unit = _unit(model, name)
    cache = build_cache(model, fp_model, unit, _unit(fp_model, name), [batches[0]["img"]], cfg, CPU)
    cached = cache.gather([0, 1])[0]
    seen_inputs, inner = [], []
    unit.register_forward_pre_hook(lambda module, args: seen_inputs.append(args[0].detach().clone()))
    inner_quantizer = unit.conv1.block_post_act_fake_quantize

    def record_inner(module, args, output):
        x = args[0].detach()
        quantized = fake_quantize(
            x, module.scale.detach(), module.zero_point.detach(), module.quant_min, module.quant_max
        )
        differs = quantized != x
        inner.append((module.drop_prob, (output.detach() == x)[differs], (output.detach() == quantized)[differs]))

    inner_quantizer.register_forward_hook(record_inner)
    reconstruct_unit(unit, cache, cfg, seed=0, show_progress=False)
    training_input = seen_inputs[0]
    differs = cached.quant_input != cached.fp_input
    from_quant = (training_input == cached.quant_input)[differs].float().mean().item()
    from_fp = (training_input == cached.fp_input)[differs].float().mean().item()
    assert 0.4 < from_quant < 0.6 and 0.4 < from_fp < 0.6 and from_quant + from_fp == pytest.approx(1.0)
    drop_prob, kept_float, kept_quant = inner[0]
    assert drop_prob == 0.5 and 0.4 < kept_float.float().mean().item() < 0.6
    assert torch.all(kept_float | kept_quant)
    assert inner_quantizer.drop_prob == 1.0  # restored after reconstruction


def test_temperature_and_regulariser():
    decay = TemperatureDecay(iters=100, warm_up=0.2, b_range=(20.0, 2.0))
    assert decay(0) == 20.0 and decay(19) == 20.0 and decay(20) == 20.0
    assert decay(60) == pytest.approx(11.0) and decay(100) == pytest.approx(2.0)
    quantizer = AdaRoundFakeQuantize(MSEObserver, bit=2, symmetric=False, ch_axis=0)
    weight = torch.randn(4, 3, 3, 3)
    quantizer.enable_observer()
    quantizer(weight)
    quantizer.disable_observer()
    quantizer.init(weight, "learned_hard_sigmoid")
    h = quantizer.rectified_sigmoid()
    expected = (1 - (2 * h - 1).abs().pow(2.0)).sum()
    assert torch.allclose(rounding_regulariser([quantizer], 2.0), expected)


def test_cache_host_memory_and_half_precision():
    quant = torch.randn(2, 4, 8, 8)
    cache32 = ReconCache(CPU, keep_on_device=False, dtype=torch.float32, keep_fp_input=True)
    cache16 = ReconCache(CPU, keep_on_device=False, dtype=torch.float16, keep_fp_input=False)
    for cache in (cache32, cache16):
        cache.add(quant, quant + 1, quant * 2)
        cache.add(torch.randn(1, 4, 4, 8), torch.randn(1, 4, 4, 8), torch.randn(1, 4, 4, 8))
    assert len(cache32) == 3
    assert cache32.nbytes() == 3 * (2 * 4 * 64 + 4 * 32) * 4
    assert cache16.nbytes() == 2 * (2 * 4 * 64 + 4 * 32) * 2  # no float input kept, 2 bytes each
    groups = cache32.gather([0, 2, 1])
    assert sorted(tuple(g.quant_input.shape) for g in groups) == [(1, 4, 4, 8), (2, 4, 8, 8)]
    big = next(g for g in groups if g.quant_input.shape[0] == 2)
    assert big.quant_input.dtype == torch.float32 and torch.equal(big.fp_output, quant * 2)
    assert cache16.gather([0])[0].fp_input is None


class _Killed(Exception):
    pass


def _fresh(config, batches):
    return _calibrated(retinanet_cfg(18), config, batches)


def test_resume_matches_uninterrupted_run(tmp_path):
    config = q_config(w_bit=2, iters=2, drop_prob=0.5)
    cfg = ReconConfig.from_mapping(config["recon"])
    batches = random_batches(1, height=64, width=64)
    images = [b["img"] for b in batches]

    model, fp_model = _fresh(config, batches)
    reconstruct(model, fp_model, images, cfg, device=CPU, seed=3, show_progress=False)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    progress = ReconProgress(str(tmp_path), fingerprint={"seed": 3})
    model, fp_model = _fresh(config, batches)
    progress.save(model, next_unit=0, finished_units=[])

    def save_then_die(done, names):
        progress.save(model, done, names)
        if done == 3:
            raise _Killed

    with pytest.raises(_Killed):
        reconstruct(model, fp_model, images, cfg, device=CPU, seed=3, on_unit_done=save_then_die, show_progress=False)

    model, fp_model = _fresh(config, batches)  # a new process: wrap again, then restore
    next_unit = progress.restore(model)
    assert next_unit == 3
    reconstruct(model, fp_model, images, cfg, device=CPU, seed=3, start_unit=next_unit, show_progress=False)
    resumed = model.state_dict()
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key


def test_resume_refuses_another_runs_progress(tmp_path):
    config = q_config()
    model, _ = _fresh(config, random_batches(1))
    ReconProgress(str(tmp_path), fingerprint={"seed": 0}).save(model, 0, [])
    with pytest.raises(ProgressFileError, match=r"--seed changed \(seed: 0 -> 1\)"):
        ReconProgress(str(tmp_path), fingerprint={"seed": 1}).restore(model)

"""Reconstruction on the compute device (CUDA when present, else CPU): fused against plain quantizers, the cache on
the device against the cache in (pinned) host memory, the fused path against the plain one over whole steps, and
bfloat16 autocast keeping the quantizers in float32. benchmarks/gpu_check.sh runs these on a GPU."""

import copy
import dataclasses

import pytest
import torch

from helpers.qdrop_models import faster_rcnn_cfg, fused_detector, q_config, random_batches
from qdrop.config.q_config import QConfig
from qdrop.model import quantize_detector
from qdrop.ptq import float_reference
from qdrop.ptq.calibration import calibrate
from qdrop.ptq.reconstruction import build_cache, reconstruct_unit, unit_output_error
from qdrop.quantization import LSQFakeQuantize, MinMaxObserver, fake_quantizers

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
UNIT = "backbone.layer1.0"


@pytest.fixture(scope="module")
def calibrated():
    config = QConfig.from_mapping(q_config(w_bit=2, a_bit=4, iters=4, drop_prob=0.5))
    batches = random_batches(1)
    model = quantize_detector(fused_detector(faster_rcnn_cfg(50)), config).to(DEVICE)
    fp_model = float_reference(model)
    calibrate(model, batches, DEVICE, show_progress=False)
    return model, fp_model, config, [b["img"] for b in batches]


def _reconstructed(calibrated, **recon):
    """A copy of the unit after 4 steps with the given recon overrides; returns (unit, cache)."""
    model, fp_model, config, images = calibrated
    cfg = dataclasses.replace(config.recon, **recon)
    unit = copy.deepcopy(model.get_submodule(UNIT))
    cache = build_cache(model, fp_model, model.get_submodule(UNIT), fp_model.get_submodule(UNIT), images, cfg, DEVICE)
    reconstruct_unit(unit, cache, cfg, seed=3, show_progress=False)
    return unit, cache


def _learned(unit):
    return {
        name: tensor.detach().cpu() for name, tensor in unit.state_dict().items() if name.endswith(("alpha", "scale"))
    }


def test_fused_quantizer_on_device_matches_plain():
    x = (torch.randn(2, 8, 16, 16) * 2).to(DEVICE)
    quantizer = LSQFakeQuantize(MinMaxObserver, bit=4).to(DEVICE)
    quantizer(x)
    quantizer.disable_observer()
    quantizer.drop_prob = 0.5
    results = []
    for fast in (False, True):
        q, inp = copy.deepcopy(quantizer), x.clone().requires_grad_(True)
        torch.manual_seed(0)
        q.fast = fast
        out = q(inp)
        out.square().sum().backward()
        results.append((out.detach(), inp.grad, q.scale.grad))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[1][1], results[0][1])
    torch.testing.assert_close(results[1][2], results[0][2], rtol=1e-4, atol=1e-6)


def test_fast_and_plain_reconstruction_agree(calibrated):
    plain, cache = _reconstructed(calibrated, fast=False)
    fast, _ = _reconstructed(calibrated, fast=True)
    for name, value in _learned(plain).items():
        torch.testing.assert_close(
            _learned(fast)[name], value, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
        )
    assert unit_output_error(fast, cache) == pytest.approx(unit_output_error(plain, cache), rel=1e-4)


def test_cache_on_device_and_in_host_memory_agree(calibrated):
    on_device, device_cache = _reconstructed(calibrated, keep_gpu=True)
    on_host, host_cache = _reconstructed(calibrated, keep_gpu=False)
    assert device_cache.storage_device.type == DEVICE.type
    assert host_cache.storage_device.type == "cpu"
    assert host_cache.pin == (DEVICE.type == "cuda")
    if host_cache.pin:
        assert all(t.is_pinned() for batch in host_cache._batches for t in batch.values())
    for name, value in _learned(on_device).items():
        torch.testing.assert_close(_learned(on_host)[name], value, msg=lambda m, name=name: f"{name}: {m}")


def test_bfloat16_autocast_keeps_quantizers_in_float32(calibrated):
    unit, cache = _reconstructed(calibrated, amp="bfloat16")
    conv_outputs = []
    unit.conv3.module.register_forward_hook(lambda _module, _args, out: conv_outputs.append(out.dtype))
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        out = unit(cache.gather([0])[0].quant_input)
    assert conv_outputs == [torch.bfloat16] and out.dtype == torch.float32  # the block's quantizer ran in float32
    assert all(quantizer.scale.dtype == torch.float32 for _, quantizer in fake_quantizers(unit))
    plain, _ = _reconstructed(calibrated)
    error, reference = unit_output_error(unit, cache), unit_output_error(plain, cache)
    assert reference * 0.8 < error < reference * 1.25  # 4 steps in bfloat16 land near the float32 result

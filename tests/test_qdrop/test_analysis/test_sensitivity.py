"""Per-unit sensitivity (qdrop.analysis.sensitivity) on a tiny RetinaNet."""

import pytest
import torch

from helpers.qdrop_models import fcos_cfg, fused_detector, image_meta, q_config, random_batches, retinanet_cfg
from qdrop.analysis.sensitivity import OutputError, quantize_only, top_units, unit_sensitivity
from qdrop.config.q_config import QConfig
from qdrop.model import quantization_units, quantize_detector
from qdrop.ptq.calibration import calibrate
from qdrop.ptq.capture import forward_order
from qdrop.quantization import fake_quantizers

COARSE_UNIT = "backbone.layer2.0"


@pytest.fixture(scope="module")
def calibrated():
    """A calibrated W8A8 tiny RetinaNet whose COARSE_UNIT has 2-bit weights (set by an override)."""
    torch.manual_seed(0)
    settings = {**q_config(w_bit=8, a_bit=8), "overrides": [{"modules": COARSE_UNIT, "w_qconfig": {"bit": 2}}]}
    model = quantize_detector(fused_detector(retinanet_cfg(18)), QConfig.from_mapping(settings))
    batches = random_batches(num_batches=2)
    calibrate(model, batches, torch.device("cpu"))
    images = [batch["img"] for batch in batches]
    return model, images, forward_order(model, quantization_units(model), images[0])


def test_the_most_coarsely_quantized_unit_ranks_first(calibrated):
    model, images, units = calibrated
    seen = []
    records = unit_sensitivity(
        model,
        units,
        OutputError(model, images, torch.device("cpu")),
        on_unit=lambda index, name, score: seen.append((index, name)),
    )
    assert [record["unit"] for record in records] == [name for name, _ in units]  # forward order
    assert seen == [(index, name) for index, (name, _) in enumerate(units)]
    assert all(record["score"] > 0 for record in records)
    ranking = top_units(records, count=len(records))
    assert ranking[0]["unit"] == COARSE_UNIT
    assert ranking[0]["score"] > 2 * ranking[1]["score"]
    # afterwards the whole model quantizes again
    assert all(quantizer.fake_quant_enabled for _, quantizer in fake_quantizers(model))


def test_quantize_only_switches_one_unit(calibrated):
    model, _, units = calibrated
    name, unit = units[3]
    quantize_only(model, unit)
    enabled = {quantizer_name for quantizer_name, quantizer in fake_quantizers(model) if quantizer.fake_quant_enabled}
    assert enabled and all(quantizer_name.startswith(name + ".") for quantizer_name in enabled)
    quantize_only(model, None)
    assert not any(quantizer.fake_quant_enabled for _, quantizer in fake_quantizers(model))


def test_the_float_model_has_no_output_error(calibrated):
    model, images, _ = calibrated
    damage = OutputError(model, images, torch.device("cpu"))
    quantize_only(model, None)
    assert damage() == 0.0


def test_one_stage_detector_with_quantized_head():
    """FCOS with `quant_head: True`: the units extract_feat runs are ranked (the head's GroupNorm units do not change
    the neck's features and are not among them); the whole model quantizes again afterwards."""
    model = quantize_detector(fused_detector(fcos_cfg()), q_config(w_bit=4, a_bit=4, quant_head=True))
    metas = [image_meta(64, 96)] * 2
    batches = [dict(batch, img_metas=metas) for batch in random_batches(num_batches=1)]
    calibrate(model, batches, torch.device("cpu"), run_heads=True)
    images = [batch["img"] for batch in batches]
    units = forward_order(model, quantization_units(model), images[0])
    assert units[0][0] == "backbone.conv1" and units[-1][0].startswith("neck.fpn_convs.")
    assert "bbox_head.cls_convs.0" in dict(quantization_units(model))
    records = unit_sensitivity(model, units, OutputError(model, images, torch.device("cpu")))
    assert len(records) == len(units) and all(record["score"] > 0 for record in records)
    assert all(quantizer.fake_quant_enabled for _, quantizer in fake_quantizers(model))

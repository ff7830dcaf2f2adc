"""The run report (qdrop.analysis.report): report.md with its figures, and the stage timer."""

import sys
import time

import pytest
import torch
import yaml

from helpers.qdrop_models import fcos_cfg, fused_detector, q_config
from mmdet.models.utils import Scale
from qdrop.analysis import RunRecord, StageTimer, command_line, peak_memory_mib, write_run_report
from qdrop.model import Placement, placement_table, quantize_detector
from qdrop.model.quantize import KEPT_FLOAT
from qdrop.ptq import UnitReconstruction

Q_CONFIG = {
    "a_qconfig": {"quantizer": "LSQFakeQuantize", "bit": 4},
    "w_qconfig": {"bit": 2},
    "calibrate": 16,
    "recon": {"iters": 200, "b_range": [20, 2]},
}


def _record(units=True) -> RunRecord:
    placement = [
        Placement(
            "backbone.conv1.module.weight_fake_quant",
            "weight",
            8,
            "per-channel (axis 0)",
            "AdaRoundFakeQuantize",
            "MSEObserver",
            "backbone.conv1",
            False,
        ),
        Placement(
            "backbone.layer1.0.conv1.module.weight_fake_quant",
            "weight",
            2,
            "per-channel (axis 0)",
            "AdaRoundFakeQuantize",
            "MSEObserver",
            "backbone.layer1.0.conv1",
            False,
        ),
        Placement(
            "backbone.layer1.0.conv2.module.weight_fake_quant",
            "weight",
            2,
            "per-channel (axis 0)",
            "AdaRoundFakeQuantize",
            "MSEObserver",
            "backbone.layer1.0.conv2",
            False,
        ),
        Placement(
            "backbone.conv1.block_post_act_fake_quantize",
            "activation",
            4,
            "per-tensor",
            "LSQFakeQuantize",
            "AvgMSEFastObserver",
            "backbone.conv1",
            False,
        ),
    ]
    reconstructed = (
        UnitReconstruction("backbone.conv1", 0.5, 0.1, ((0, 0.4), (50, 0.2), (99, 0.1))),
        UnitReconstruction("backbone.layer1.0", 2.0, 1.5, ((0, 1.9), (50, 1.7), (99, 1.5))),
    )
    return RunRecord(
        command=command_line(["qdrop/solver/quant_coco.py", "a b.py", "--eval", "bbox"]),
        q_config=Q_CONFIG,
        placement=placement,
        stage_seconds={"calibrate": 12.0, "reconstruct": 30.5},
        peak_memory_mib={"host max RSS": 900.0},
        metrics={"bbox_mAP": 0.2512, "bbox_mAP_50": 0.5},
        units=reconstructed if units else (),
        placement_file="placement.txt",
    )


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_links_images_that_exist_and_holds_the_facts(tmp_path):
    written = write_run_report(str(tmp_path), _record())
    assert [path.rsplit("/", 1)[1] for path in written] == ["recon_errors.png", "recon_curves.png", "report.md"]
    text = (tmp_path / "report.md").read_text()
    assert "qdrop/solver/quant_coco.py 'a b.py' --eval bbox" in text
    assert "| bbox_mAP | 0.2512 |" in _section(text, "Metrics")
    times = _section(text, "Time per stage")
    assert "| calibrate | 12.0 |" in times and "| total | 42.5 |" in times
    assert "| host max RSS | 900 |" in _section(text, "Peak memory")
    placement = _section(text, "Placement")
    assert "4 quantizers: 3 weight, 1 activation." in placement
    assert "| weight | 2 | per-channel (axis 0) | AdaRoundFakeQuantize | MSEObserver | 2 |" in placement
    assert "| weight | 8 | per-channel (axis 0) | AdaRoundFakeQuantize | MSEObserver | 1 |" in placement
    assert "[placement.txt](placement.txt)" in placement
    recon = _section(text, "Reconstruction")
    for image in ("recon_errors.png", "recon_curves.png"):
        assert f"]({image})" in recon
        assert (tmp_path / image).stat().st_size > 1000
    assert "| backbone.layer1.0 | 2 | 1.5 | 0.750 |" in recon
    q_config_yaml = _section(text, "q_config").split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(q_config_yaml) == Q_CONFIG


def test_a_run_without_reconstruction_draws_nothing(tmp_path):
    written = write_run_report(str(tmp_path), _record(units=False))
    assert [path.rsplit("/", 1)[1] for path in written] == ["report.md"]
    assert "No unit was reconstructed in this run." in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "recon_errors.png").exists()


def test_without_matplotlib_the_report_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    written = write_run_report(str(tmp_path), _record())
    assert [path.rsplit("/", 1)[1] for path in written] == ["report.md"]
    text = (tmp_path / "report.md").read_text()
    assert "pip install -e .[analysis]" in text and "](recon_errors.png)" not in text
    assert "| backbone.conv1 | 0.5 | 0.1 | 0.200 |" in text


def test_stage_timer_adds_up_repeated_stages_in_first_run_order():
    timer = StageTimer()
    with timer.stage("evaluate"):
        time.sleep(0.01)
    with timer.stage("calibrate"):
        pass
    with pytest.raises(RuntimeError):
        with timer.stage("evaluate"):
            time.sleep(0.01)
            raise RuntimeError("a failing stage is still timed")
    assert list(timer.seconds) == ["evaluate", "calibrate"]
    assert timer.seconds["evaluate"] >= 0.02 and timer.seconds["calibrate"] < timer.seconds["evaluate"]


def test_peak_memory_reports_the_process():
    peaks = peak_memory_mib()
    assert list(peaks) == ["host max RSS"] and 10 < peaks["host max RSS"] < 10**6


def test_report_names_the_parts_kept_float(tmp_path):
    """A one-stage detector with `quant_head: True`: GroupNorm of the towers and the per-level Scales stay float."""
    model = quantize_detector(fused_detector(fcos_cfg()), q_config(quant_head=True))
    write_run_report(str(tmp_path), RunRecord("cmd", Q_CONFIG, placement_table(model)))
    placement = _section((tmp_path / "report.md").read_text(), "Placement")
    assert "Kept float: 9 parts." in placement
    assert f"| GroupNorm | 4 | {KEPT_FLOAT[torch.nn.GroupNorm]} |" in placement
    assert f"| Scale | 5 | {KEPT_FLOAT[Scale]} |" in placement

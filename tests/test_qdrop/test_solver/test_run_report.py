"""Every quant_coco.py run leaves its report: report.md, recon_errors.png and recon_curves.png."""

import re

import matplotlib.image
import pytest
import yaml

from helpers.qdrop_models import q_config, quant_coco_argv, write_tiny_run
from qdrop.solver import quant_coco

ITERS = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A quant_coco.py run of a tiny RetinaNet whose layer4 keeps 4-bit weights: (work dir, metrics)."""
    root = tmp_path_factory.mktemp("run_report")
    settings = {
        **q_config(w_bit=2, a_bit=4, iters=ITERS),
        "overrides": [{"modules": "backbone.layer4.*", "w_qconfig": {"bit": 4}}],
    }
    config, checkpoint, q_path = write_tiny_run(root, settings, num_train=4, num_val=2)
    work_dir = root / "work"
    metric = quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    return work_dir, metric


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_holds_the_runs_facts(run):
    work_dir, metric = run
    text = (work_dir / "report.md").read_text()
    assert "qdrop/solver/quant_coco.py " in text and "--q_config" in text
    assert f"| bbox_mAP | {metric['bbox_mAP']:.4g} |" in _section(text, "Metrics")
    stages = re.findall(r"^\| ([a-z ]+) \| [0-9.]+ \|$", _section(text, "Time per stage"), flags=re.M)
    assert stages == ["load and quantize", "calibrate", "reconstruct", "evaluate", "total"]
    assert "host max RSS" in _section(text, "Peak memory")
    placement = _section(text, "Placement")
    assert "| weight | 4 | per-channel (axis 0) | AdaRoundFakeQuantize |" in placement
    assert "| weight | 2 | per-channel (axis 0) | AdaRoundFakeQuantize |" in placement
    q_config_yaml = _section(text, "q_config").split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(q_config_yaml)["overrides"] == [{"modules": "backbone.layer4.*", "w_qconfig": {"bit": 4}}]


def test_placement_txt_shows_the_override(run):
    work_dir, _ = run
    rows = [line.split() for line in (work_dir / "placement.txt").read_text().splitlines()[2:-1]]
    weight_bits = {row[0]: int(row[3]) for row in rows if row[2] == "weight"}
    assert weight_bits["backbone.layer4.0.conv1"] == 4 and weight_bits["backbone.layer3.0.conv1"] == 2
    assert weight_bits["backbone.conv1"] == 8


def test_every_unit_is_in_the_table_and_the_figures_exist(run):
    work_dir, _ = run
    recon = _section((work_dir / "report.md").read_text(), "Reconstruction")
    units = re.findall(r"^\| ((?:backbone|neck)\.[\w.]+) \|", recon, flags=re.M)
    assert units[0] == "backbone.conv1" and units[-1] == "neck.fpn_convs.4" and len(units) == len(set(units))
    for image in ("recon_errors.png", "recon_curves.png"):
        assert f"]({image})" in recon
        pixels = matplotlib.image.imread(str(work_dir / image))
        assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.01

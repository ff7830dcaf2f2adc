"""qdrop/solver/quant_coco.py end to end on a tiny RetinaNet and a tiny synthetic data set."""

import glob
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from helpers.qdrop_models import (
    faster_rcnn_cfg,
    q_config,
    quant_coco_argv,
    torchrun_quant_coco_argv,
    write_tiny_run,
)
from mmdet.apis import single_gpu_test
from mmdet.models import build_detector
from mmdet.utils import CheckpointMismatchError, load_config, save_checkpoint
from qdrop.config.q_config import load_q_config
from qdrop.model import is_quantized_checkpoint_file, load_quantized_checkpoint
from qdrop.solver import quant_coco
from qdrop.solver.data import build_test_loader

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """(config path, float checkpoint path, q_config path, folder) for a tiny RetinaNet on 8 + 4 images."""
    root = tmp_path_factory.mktemp("qdrop_cli")
    config, checkpoint, q_path = write_tiny_run(root, q_config(w_bit=4, a_bit=4, iters=2))
    return config, checkpoint, q_path, root


def _eval_json(work_dir: Path) -> dict:
    files = glob.glob(str(work_dir / "eval_*.json"))
    assert len(files) == 1, files
    return json.loads(Path(files[0]).read_text())


def test_single_process_run_then_rerun_resumes(tiny_setup):
    config, checkpoint, q_path, root = tiny_setup
    work_dir = root / "run_none"
    metric = quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    assert "bbox_mAP" in metric
    record = _eval_json(work_dir)
    assert record["config"] == str(config) and record["metric"]["bbox_mAP"] == metric["bbox_mAP"]
    placement = (work_dir / "placement.txt").read_text()
    assert "backbone.conv1.module.weight_fake_quant" in placement
    assert "neck.fpn_convs.0.block_post_act_fake_quantize" not in placement
    log = "".join(Path(p).read_text() for p in glob.glob(str(work_dir / "*.log")))
    assert "neck.fpn_convs.4: output error" in log
    assert (work_dir / "retinanet_tiny.py").is_file() and (work_dir / "q_config.yaml").is_file()

    # the saved checkpoint rebuilds the same quantized model (activation quantizers included)
    assert is_quantized_checkpoint_file(str(work_dir / "quantized.pth"))
    assert not is_quantized_checkpoint_file(str(checkpoint))
    cfg = load_config(str(config))
    model = build_detector(cfg.model)
    load_quantized_checkpoint(model, str(work_dir / "quantized.pth"))
    assert any(k.endswith("block_post_act_fake_quantize.scale") for k in model.state_dict())
    dataset, loader = build_test_loader(cfg)
    again = dataset.evaluate(single_gpu_test(model.eval(), loader, show_progress=False), metric="bbox")
    assert again["bbox_mAP"] == metric["bbox_mAP"]
    # ... and tools/test.py evaluates it as it is
    tool = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "test.py"),
            str(config),
            str(work_dir / "quantized.pth"),
            "--eval",
            "bbox",
            "--work-dir",
            str(root / "retest"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert tool.returncode == 0, tool.stderr[-2000:]
    retest = json.loads(Path(glob.glob(str(root / "retest" / "eval_*.json"))[0]).read_text())
    assert retest["metric"]["bbox_mAP"] == metric["bbox_mAP"]

    # the same command again resumes after the last unit and gives the same result
    rerun = quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    assert rerun["bbox_mAP"] == metric["bbox_mAP"]
    log = "".join(Path(p).read_text() for p in glob.glob(str(work_dir / "*.log")))
    assert "resuming" in log


def test_bad_q_config_fails_before_any_work(tiny_setup, tmp_path):
    config, checkpoint, _, _ = tiny_setup
    bad = q_config()
    bad["a_qconfig"]["observer"] = "NoSuchObserver"
    q_path = tmp_path / "bad.yaml"
    q_path.write_text(yaml.safe_dump(bad))
    work_dir = tmp_path / "wd"
    with pytest.raises((ValueError, KeyError), match="observer"):
        quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    assert not work_dir.exists()


def test_checkpoint_of_another_model_fails_before_calibration(tiny_setup, tmp_path):
    config, _, q_path, _ = tiny_setup
    other = tmp_path / "faster.pth"
    save_checkpoint(build_detector(faster_rcnn_cfg(50)), str(other))
    work_dir = tmp_path / "wd"
    with pytest.raises(CheckpointMismatchError):
        quant_coco.main(quant_coco_argv(config, other, q_path, work_dir))
    assert not (work_dir / "recon_progress.pth").exists() and not glob.glob(str(work_dir / "eval_*.json"))


def test_torchrun_two_processes_writes_metrics(tiny_setup):
    config, checkpoint, q_path, root = tiny_setup
    work_dir = root / "run_torchrun"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    command = torchrun_quant_coco_argv(config, checkpoint, q_path, work_dir, REPO_ROOT)
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = _eval_json(work_dir)
    assert set(record["metric"]) >= {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"}
    assert (work_dir / "quantized.pth").is_file()
    log = "".join(Path(p).read_text() for p in glob.glob(str(work_dir / "*.log")))
    assert "2 process(es)" in log


def test_exp_configs_load():
    w2a4 = load_q_config(str(REPO_ROOT / "exp/config.yaml"))
    assert w2a4.w_qconfig.bit == 2 and w2a4.a_qconfig.bit == 4 and w2a4.calibrate == 256
    assert w2a4.recon.iters == 20000 and w2a4.recon.drop_prob == 0.5
    w4a4 = load_q_config(str(REPO_ROOT / "exp/w4a4.yaml"))
    assert w4a4.w_qconfig.bit == 4 and w4a4.w_qconfig.quantizer == "AdaRoundFakeQuantize"
    assert w4a4.recon == w2a4.recon


def test_console_scripts_point_at_the_command_modules():
    scripts = {entry.name: entry.value for entry in entry_points(group="console_scripts")}
    assert scripts["qdrop-quant"] == "qdrop.solver.quant_coco:cli"
    assert scripts["qdrop-test"] == "qdrop.cli.test:cli"
    assert scripts["qdrop-demo"] == "qdrop.cli.demo:cli"
    assert scripts["qdrop-train"] == "qdrop.cli.train:cli"

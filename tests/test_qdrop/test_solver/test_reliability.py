"""Faults and bad inputs of a QDrop run: each is refused early with a message naming the file, key or unit, and
nothing that a run has finished is lost or rewritten."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers.qdrop_models import (
    fused_detector,
    q_config,
    quant_coco_argv,
    random_batches,
    retinanet_cfg,
    torchrun_quant_coco_argv,
    write_tiny_run,
)
from mmdet.datasets import ImageFileError
from mmdet.models import build_detector
from mmdet.utils import NonFiniteWeightsError, UnknownConfigKeyError, save_checkpoint
from qdrop.config.q_config import QConfig, load_q_config
from qdrop.ptq import run_calibration, run_reconstruction, wrap
from qdrop.ptq.calibration import NonFiniteCalibrationError
from qdrop.ptq.reconstruction import NonFiniteReconstructionError
from qdrop.solver import quant_coco
from qdrop.solver.preflight import check_calibration_split
from qdrop.solver.progress import PROGRESS_FILE, ProgressFileError, ReconProgress

REPO_ROOT = Path(__file__).resolve().parents[3]
RECORDS = ("q_config.yaml", "placement.txt", "retinanet_tiny.py")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(config, checkpoint, q_config path, folder, finished work dir) of one complete tiny run."""
    root = tmp_path_factory.mktemp("reliability")
    config, checkpoint, q_path = write_tiny_run(root, q_config(w_bit=4, a_bit=4, iters=2))
    work_dir = root / "finished"
    quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    return config, checkpoint, q_path, root, work_dir


def _copy_run(work_dir: Path, target: Path) -> Path:
    shutil.copytree(work_dir, target)
    return target


def _snapshot(work_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in work_dir.iterdir() if not p.name.endswith(".log")}


def _log(work_dir: Path) -> str:
    return "".join(Path(p).read_text() for p in sorted(glob.glob(str(work_dir / "*.log"))))


def _tools_test(config: Path, checkpoint: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "test.py"), str(config), str(checkpoint), "--eval", "bbox"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture
def no_model_build(monkeypatch):
    """Fails the test if the run gets as far as building the detector."""

    def refuse(*args, **kwargs):
        raise AssertionError("the detector was built before the bad input was reported")

    monkeypatch.setattr(quant_coco, "load_detector", refuse)


# ------------------------------------------------------------------------- case 1, 2, 6: fingerprint and records
def test_changed_checkpoint_content_is_refused_and_records_kept(tiny_run, tmp_path):
    config, checkpoint, q_path, _, finished = tiny_run
    copy = tmp_path / "copy.pth"
    shutil.copy(checkpoint, copy)
    work_dir = tmp_path / "run"
    quant_coco.main(quant_coco_argv(config, copy, q_path, work_dir))
    before = _snapshot(work_dir)
    torch.manual_seed(1)
    save_checkpoint(build_detector(retinanet_cfg(18)), str(copy))  # other weights, same path
    with pytest.raises(ProgressFileError, match="the float checkpoint's content changed") as info:
        quant_coco.main(quant_coco_argv(config, copy, q_path, work_dir))
    assert f"delete {work_dir / PROGRESS_FILE}" in str(info.value) and "another --work-dir" in str(info.value)
    assert _snapshot(work_dir) == before


def test_refused_rerun_with_another_q_config_keeps_every_record(tiny_run, tmp_path):
    config, checkpoint, q_path, _, finished = tiny_run
    work_dir = _copy_run(finished, tmp_path / "run")
    before = _snapshot(work_dir)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(q_config(w_bit=4, a_bit=4, iters=2, drop_prob=0.7)))
    with pytest.raises(ProgressFileError, match=r"q_config changed \(q_config.recon.drop_prob: 0.5 -> 0.7\)"):
        quant_coco.main(quant_coco_argv(config, checkpoint, other, work_dir))
    assert _snapshot(work_dir) == before
    assert yaml.safe_load((work_dir / "q_config.yaml").read_text())["recon"]["drop_prob"] == 0.5


def test_same_inputs_by_other_paths_and_test_only_options_resume(tiny_run, tmp_path, monkeypatch):
    config, checkpoint, q_path, root, finished = tiny_run
    work_dir = _copy_run(finished, tmp_path / "run")
    copy = tmp_path / "same_bytes.pth"
    shutil.copy(checkpoint, copy)
    monkeypatch.chdir(root)
    ann = f"{root}/data/annotations/instances_val2017.json"
    metric = quant_coco.main(
        quant_coco_argv(
            config,
            os.path.relpath(copy, root),
            q_path,
            work_dir,
            "--cfg-options",
            f"data.test.ann_file={ann}",
            "evaluation.interval=2",
        )
    )
    assert "resuming" in _log(work_dir) and "bbox_mAP" in metric
    resumed = torch.load(work_dir / "quantized.pth", weights_only=True)["state_dict"]
    original = torch.load(finished / "quantized.pth", weights_only=True)["state_dict"]
    assert resumed.keys() == original.keys() and all(torch.equal(resumed[k], original[k]) for k in original)


def test_changed_calibration_data_is_refused(tiny_run, tmp_path):
    config, checkpoint, q_path, _, finished = tiny_run
    work_dir = _copy_run(finished, tmp_path / "run")
    with pytest.raises(
        ProgressFileError,
        match=r"calibration data \(data.train\) changed "
        r"\(calibration_data.pipeline.3.flip_ratio: 0.5 -> 0.0\)",
    ):
        quant_coco.main(
            quant_coco_argv(
                config, checkpoint, q_path, work_dir, "--cfg-options", "data.train.pipeline.3.flip_ratio=0.0"
            )
        )


# ------------------------------------------------------------------------------------------ case 3, 9: config
def test_misspelled_cfg_option_fails_before_any_work(tiny_run, tmp_path):
    config, checkpoint, q_path, _, _ = tiny_run
    with pytest.raises(UnknownConfigKeyError, match="nearest existing keys: data.test.ann_file"):
        argv = quant_coco_argv(config, checkpoint, q_path, tmp_path / "wd", "--cfg-options", "data.tset.ann_file=x")
        quant_coco.main(argv)
    assert not (tmp_path / "wd").exists()


def test_config_syntax_error_names_file_and_line(tiny_run, tmp_path):
    _, checkpoint, q_path, _, _ = tiny_run
    bad = tmp_path / "bad.py"
    bad.write_text("model = dict(\n    type='RetinaNet',,\n)\n")
    with pytest.raises(SyntaxError, match=rf"config file {bad}, line 2"):
        quant_coco.main(quant_coco_argv(bad, checkpoint, q_path, tmp_path / "wd"))


# -------------------------------------------------------------------------------- case 4: non-finite values
def _nan_checkpoint(checkpoint: Path, target: Path, key: str, value: float) -> Path:
    saved = torch.load(checkpoint, weights_only=True)
    saved["state_dict"][key].view(-1)[0] = value
    torch.save(saved, target)
    return target


def test_nan_float_checkpoint_is_refused_by_the_solver_and_tools_test(tiny_run, tmp_path):
    config, checkpoint, q_path, root, _ = tiny_run
    bad = _nan_checkpoint(checkpoint, tmp_path / "nan.pth", "neck.fpn_convs.4.conv.weight", float("nan"))
    with pytest.raises(NonFiniteWeightsError, match="neck.fpn_convs.4.conv.weight"):
        quant_coco.main(quant_coco_argv(config, bad, q_path, tmp_path / "wd"))
    assert not (tmp_path / "wd" / PROGRESS_FILE).exists() and not (tmp_path / "wd" / "q_config.yaml").exists()
    tool = _tools_test(config, bad)
    assert tool.returncode != 0 and "neck.fpn_convs.4.conv.weight" in tool.stderr


def test_nan_scale_in_a_quantized_checkpoint_is_named(tiny_run, tmp_path):
    config, _, _, _, finished = tiny_run
    key = "neck.fpn_convs.2.module.weight_fake_quant.scale"
    bad = _nan_checkpoint(finished / "quantized.pth", tmp_path / "q.pth", key, float("inf"))
    tool = _tools_test(config, bad)
    assert tool.returncode != 0 and key in tool.stderr and "NaN or Inf" in tool.stderr


def test_overflowing_layer_stops_the_run_naming_the_unit_and_keeps_the_units_before(tiny_run, tmp_path):
    config, checkpoint, q_path, _, _ = tiny_run
    saved = torch.load(checkpoint, weights_only=True)
    saved["state_dict"]["neck.fpn_convs.3.conv.weight"].fill_(3e38)  # finite, but the conv's output overflows
    huge = tmp_path / "huge.pth"
    torch.save(saved, huge)
    work_dir = tmp_path / "wd"
    with pytest.raises(
        NonFiniteReconstructionError,
        match=r"unit 16/17 neck.fpn_convs.3 stopped: output error nan "
        r"before reconstruction.*the 15 unit\(s\) before it stay",
    ):
        quant_coco.main(quant_coco_argv(config, huge, q_path, work_dir))
    progress = torch.load(work_dir / PROGRESS_FILE, weights_only=True)
    assert progress["next_unit"] == 15 and progress["finished_units"][-1] == "neck.fpn_convs.2"
    assert not (work_dir / "quantized.pth").exists() and not glob.glob(str(work_dir / "eval_*.json"))


def test_non_finite_unit_stops_reconstruction_and_keeps_the_units_before(tiny_run):
    config = QConfig.from_mapping(q_config(iters=2))
    model, reference = wrap(fused_detector(retinanet_cfg(18)), config, torch.device("cpu"))
    batches = random_batches(2)
    run_calibration(model, batches, config, torch.device("cpu"))
    with torch.no_grad():
        model.backbone.layer2[1].conv1.module.weight.view(-1)[0] = float("nan")
    saved = []
    with pytest.raises(
        NonFiniteReconstructionError,
        match=r"unit 5/17 backbone.layer2.1 stopped: output error nan "
        r"before reconstruction.*the 4 unit\(s\) before it stay",
    ):
        run_reconstruction(
            model,
            reference,
            batches,
            config,
            device=torch.device("cpu"),
            seed=0,
            on_unit_done=lambda done, names: saved.append(done),
        )
    assert saved == [1, 2, 3, 4]


# ------------------------------------------------------------------------------ case 8: damaged progress files
@pytest.mark.parametrize(
    "damage, problem", [("empty", "is empty"), ("truncated", "truncated or corrupt"), ("text", "is a text file")]
)
def test_damaged_progress_file_names_the_file_and_how_to_start_over(
    tiny_run, tmp_path, damage, problem, no_model_build
):
    config, checkpoint, q_path, _, finished = tiny_run
    work_dir = _copy_run(finished, tmp_path / "run")
    progress = work_dir / PROGRESS_FILE
    data = progress.read_bytes()
    progress.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "text": b"progress: 6 units\n"}[damage])
    before = _snapshot(work_dir)
    with pytest.raises(ProgressFileError) as info:
        quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    message = str(info.value)
    assert str(progress) in message and problem in message and f"delete {progress}" in message
    assert _snapshot(work_dir) == before


def test_progress_file_of_another_kind_is_named(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / PROGRESS_FILE)
    with pytest.raises(ProgressFileError, match="not a reconstruction progress file .*lacks fingerprint, next_unit"):
        ReconProgress(str(tmp_path), {"seed": 0}).check()


# -------------------------------------------------------------------- case 5, 7, 10, 11: inputs checked first
def test_unsupported_metric_fails_before_any_work(tiny_run, tmp_path):
    config, checkpoint, q_path, _, _ = tiny_run
    argv = quant_coco_argv(config, checkpoint, q_path, tmp_path / "wd")
    argv[argv.index("bbox")] = "bboxx"
    with pytest.raises(KeyError, match="did you mean 'bbox'"):
        quant_coco.main(argv)
    assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize("damage, problem", [("missing", "no such file"), ("truncated", "truncated JPEG")])
def test_bad_test_image_fails_before_the_model_is_built(tiny_run, tmp_path, damage, problem, no_model_build):
    config, checkpoint, q_path, root, _ = tiny_run
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    image = sorted((data / "val2017").iterdir())[1]
    if damage == "missing":
        image.unlink()
    else:
        image.write_bytes(image.read_bytes()[:-40])
    cfg_options = [
        f"data.test.ann_file={data}/annotations/instances_val2017.json",
        f"data.test.img_prefix={data}/val2017/",
    ]
    with pytest.raises(ImageFileError, match=rf"(?s)1 of the 4 images .*{image.name}: {problem}"):
        quant_coco.main(quant_coco_argv(config, checkpoint, q_path, tmp_path / "wd", "--cfg-options", *cfg_options))
    assert not (tmp_path / "wd" / PROGRESS_FILE).exists()


def test_calibrate_not_divisible_by_the_processes_is_an_error():
    config = QConfig.from_mapping(q_config())  # calibrate 4
    check_calibration_split(config, "q.yaml", 2)
    five = QConfig.from_mapping({**q_config(), "calibrate": 5})
    with pytest.raises(
        ValueError,
        match=r"q.yaml: calibrate: 5 images cannot be split evenly over 2 processes; "
        r"use a multiple of 2 \(e.g. 4 or 6\)",
    ):
        check_calibration_split(five, "q.yaml", 2)


def test_calibrate_larger_than_the_train_set_names_the_q_config_before_the_model(tiny_run, tmp_path, no_model_build):
    config, checkpoint, _, _, _ = tiny_run
    q_path = tmp_path / "big.yaml"
    q_path.write_text(yaml.safe_dump({**q_config(), "calibrate": 64}))
    with pytest.raises(ValueError, match=rf"{q_path}: calibrate: 64 images requested but the train set .* has 8"):
        quant_coco.main(quant_coco_argv(config, checkpoint, q_path, tmp_path / "wd"))


@pytest.mark.parametrize(
    "section, axis, allowed",
    [
        ("w_qconfig", 5, r"-1 \(per tensor\), 0 \(per output channel\)"),
        ("w_qconfig", 1, r"-1 \(per tensor\), 0 \(per output channel\)"),
        ("a_qconfig", 0, r"-1 \(per tensor\), 1 \(per channel of \(N, C, H, W\) activations\)"),
        ("a_qconfig", 2, r"-1 \(per tensor\), 1 \(per channel"),
    ],
)
def test_ch_axis_is_validated_with_the_q_config(tmp_path, section, axis, allowed):
    mapping = q_config()
    mapping[section]["ch_axis"] = axis
    path = tmp_path / "axis.yaml"
    path.write_text(yaml.safe_dump(mapping))
    with pytest.raises(ValueError, match=rf"{path}: {section}.ch_axis: got {axis}; allowed values: {allowed}"):
        load_q_config(path)


def test_non_finite_activations_stop_calibration_naming_the_quantizer():
    config = QConfig.from_mapping(q_config())
    model, _ = wrap(fused_detector(retinanet_cfg(18)), config, torch.device("cpu"))
    with torch.no_grad():
        model.backbone.layer3[0].conv1.module.bias.fill_(float("inf"))
    with pytest.raises(NonFiniteCalibrationError, match=r"activations at backbone\.layer3\.0\.\S+ hold NaN or Inf"):
        run_calibration(model, random_batches(1), config, torch.device("cpu"))


# ---------------------------------------------------------------------------- kept: resume after kill -9
@pytest.mark.slow
def test_kill_9_during_reconstruction_then_rerun_is_bit_identical(tiny_run, tmp_path):
    config, checkpoint, _, _, _ = tiny_run
    q_path = tmp_path / "slower.yaml"
    q_path.write_text(yaml.safe_dump(q_config(w_bit=4, a_bit=4, iters=30)))
    reference = tmp_path / "reference"
    quant_coco.main(quant_coco_argv(config, checkpoint, q_path, reference))

    work_dir = tmp_path / "killed"
    progress = work_dir / PROGRESS_FILE
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "qdrop/solver/quant_coco.py"),
            *quant_coco_argv(config, checkpoint, q_path, work_dir),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        if progress.exists() and torch.load(progress, weights_only=True)["next_unit"] >= 3:
            break
        time.sleep(0.1)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done = torch.load(progress, weights_only=True)["next_unit"]
    assert 3 <= done < 17 and not (work_dir / "quantized.pth").exists()

    quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    assert f"resuming from {progress}: {done} unit(s)" in _log(work_dir)
    resumed = torch.load(work_dir / "quantized.pth", weights_only=True)["state_dict"]
    original = torch.load(reference / "quantized.pth", weights_only=True)["state_dict"]
    assert resumed.keys() == original.keys() and all(torch.equal(resumed[k], original[k]) for k in original)
    assert _eval_metric(work_dir) == _eval_metric(reference)


def _descendants(pid: int) -> list:
    """Every process below `pid`, read from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@pytest.mark.slow
def test_kill_9_of_two_processes_then_rerun_is_bit_identical(tiny_run, tmp_path):
    """torchrun and both workers killed with SIGKILL after a few units; the same command resumes and ends with the
    model and metrics of an uninterrupted two-process run."""
    config, checkpoint, _, _, _ = tiny_run
    q_path = tmp_path / "slower.yaml"
    q_path.write_text(yaml.safe_dump(q_config(w_bit=4, a_bit=4, iters=30)))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}

    def run(work_dir: Path) -> None:
        done = subprocess.run(
            torchrun_quant_coco_argv(config, checkpoint, q_path, work_dir, REPO_ROOT),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    reference = tmp_path / "reference"
    run(reference)
    work_dir = tmp_path / "killed"
    progress = work_dir / PROGRESS_FILE
    job = subprocess.Popen(
        torchrun_quant_coco_argv(config, checkpoint, q_path, work_dir, REPO_ROOT),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 400
    while job.poll() is None and time.monotonic() < deadline:
        if progress.exists() and torch.load(progress, weights_only=True)["next_unit"] >= 3:
            break
        time.sleep(0.1)
    for pid in [job.pid, *_descendants(job.pid)]:  # torchrun and its workers (which run in sessions of their own)
        os.kill(pid, signal.SIGKILL)
    job.wait()
    done = torch.load(progress, weights_only=True)["next_unit"]
    assert 3 <= done < 17 and not (work_dir / "quantized.pth").exists()

    run(work_dir)
    assert f"resuming from {progress}: {done} unit(s)" in _log(work_dir)
    resumed = torch.load(work_dir / "quantized.pth", weights_only=True)["state_dict"]
    original = torch.load(reference / "quantized.pth", weights_only=True)["state_dict"]
    assert resumed.keys() == original.keys() and all(torch.equal(resumed[k], original[k]) for k in original)
    assert _eval_metric(work_dir) == _eval_metric(reference)


def _eval_metric(work_dir: Path) -> dict:
    files = glob.glob(str(work_dir / "eval_*.json"))
    assert len(files) == 1, files
    return json.loads(Path(files[0]).read_text())["metric"]

"""Files are data: no checkpoint, quantized checkpoint or progress file runs code when read; a work dir belongs to
one run at a time; errors about the input are one message, not a traceback; unsupported models are named before any
data is read."""

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers.qdrop_models import q_config, quant_coco_argv, write_tiny_config, write_tiny_run
from mmdet.models.builder import UnsupportedModelError
from mmdet.utils import UnsafeCheckpointError
from qdrop.cli import export_onnx
from qdrop.solver import quant_coco
from qdrop.solver.progress import PROGRESS_FILE, ProgressFileError
from qdrop.solver.work_dir import LOCK_FILE, WorkDirError

REPO_ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


class RunsCommand:
    """Unpickling this object runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _payload(marker: Path) -> RunsCommand:
    return RunsCommand(f"touch {marker}")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(config, checkpoint, q_config path, finished work dir) of one complete tiny run."""
    root = tmp_path_factory.mktemp("file_safety")
    config, checkpoint, q_path = write_tiny_run(root, q_config(w_bit=4, a_bit=4, iters=2))
    work_dir = root / "finished"
    quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    return config, checkpoint, q_path, work_dir


def _with_payload_in_meta(checkpoint: Path, target: Path, marker: Path) -> Path:
    saved = torch.load(checkpoint, weights_only=True)
    saved["meta"] = {**(saved.get("meta") or {}), "note": _payload(marker)}
    torch.save(saved, target)
    return target


def test_float_checkpoint_with_code_in_its_meta_is_refused_by_tools_test(tiny_run, tmp_path):
    config, checkpoint, _, _ = tiny_run
    marker = tmp_path / "ran"
    bad = _with_payload_in_meta(checkpoint, tmp_path / "bad.pth", marker)
    result = subprocess.run(
        [sys.executable, "tools/test.py", str(config), str(bad), "--eval", "bbox"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert result.returncode == 2, result.stderr
    assert str(bad) in result.stderr and "system" in result.stderr and "QDROP_ALLOW_PICKLE" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_float_checkpoint_with_code_in_its_state_dict_is_refused_by_quant_coco(tiny_run, tmp_path):
    config, checkpoint, q_path, _ = tiny_run
    marker = tmp_path / "ran"
    saved = torch.load(checkpoint, weights_only=True)
    saved["state_dict"]["extra"] = _payload(marker)
    bad = tmp_path / "bad.pth"
    torch.save(saved, bad)
    with pytest.raises(UnsafeCheckpointError, match=rf"{bad}.*system"):
        quant_coco.main(quant_coco_argv(config, bad, q_path, tmp_path / "wd"))
    assert not marker.exists()


def test_quantized_checkpoint_with_code_is_refused_by_the_export(tiny_run, tmp_path):
    config, _, _, work_dir = tiny_run
    marker = tmp_path / "ran"
    bad = _with_payload_in_meta(work_dir / "quantized.pth", tmp_path / "quantized.pth", marker)
    with pytest.raises(UnsafeCheckpointError, match=rf"{bad}.*system"):
        export_onnx.main([str(config), str(bad), "--out", str(tmp_path / "model.onnx")])
    assert not marker.exists() and not (tmp_path / "model.onnx").exists()


def test_replaced_progress_file_is_not_unpickled_on_resume(tiny_run, tmp_path):
    config, checkpoint, q_path, _ = tiny_run
    marker = tmp_path / "ran"
    work_dir = tmp_path / "shared"
    work_dir.mkdir()
    torch.save({"format": "anything", "state": _payload(marker)}, work_dir / PROGRESS_FILE)
    with pytest.raises(ProgressFileError, match=r"system"):
        quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    assert not marker.exists()


def test_trusted_legacy_checkpoint_loads_with_the_environment_switch(tiny_run, tmp_path, monkeypatch):
    config, checkpoint, _, _ = tiny_run
    marker = tmp_path / "ran"
    bad = _with_payload_in_meta(checkpoint, tmp_path / "legacy.pth", marker)
    monkeypatch.setenv("QDROP_ALLOW_PICKLE", "1")
    from mmdet.utils import read_checkpoint

    assert "state_dict" in read_checkpoint(str(bad))
    assert marker.exists()  # the user said the file is trusted: it was unpickled in full


def test_quantized_checkpoint_of_the_run_loads_and_evaluates(tiny_run, tmp_path):
    """A quantized.pth (weights, scales, alphas, q_config in meta) is plain data: it loads weights-only."""
    config, _, _, work_dir = tiny_run
    result = subprocess.run(
        [sys.executable, "tools/test.py", str(config), str(work_dir / "quantized.pth"), "--eval", "bbox"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert "bbox_mAP" in result.stdout


# ------------------------------------------------------------------------------------------- one run per work dir
def test_second_run_on_a_busy_work_dir_is_refused_while_the_first_completes(tiny_run, tmp_path):
    config, checkpoint, _, _ = tiny_run
    q_path = tmp_path / "slow.yaml"
    q_path.write_text(yaml.safe_dump(q_config(w_bit=4, a_bit=4, iters=40)))
    work_dir = tmp_path / "busy"
    command = [sys.executable, "qdrop/solver/quant_coco.py", *quant_coco_argv(config, checkpoint, q_path, work_dir)]
    first = subprocess.Popen(command, cwd=REPO_ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (work_dir / LOCK_FILE).exists():
            assert first.poll() is None and time.time() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        started = time.time()
        second = subprocess.run(command, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True)
        refused_after = time.time() - started
        assert second.returncode == 2
        assert f"process {first.pid} on host" in second.stderr and "in use" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None, "the second run was refused only after the first had finished"
        assert refused_after < 60  # the refusal comes before data, model or calibration (mostly interpreter start)
    finally:
        assert first.wait(timeout=600) == 0, first.stderr.read().decode()[-2000:]
    assert len(glob.glob(str(work_dir / "eval_*.json"))) == 1 and (work_dir / "quantized.pth").is_file()
    assert not (work_dir / LOCK_FILE).exists()  # released at the end


def test_lock_of_a_process_that_is_gone_is_taken_over(tiny_run, tmp_path):
    config, checkpoint, q_path, _ = tiny_run
    work_dir = tmp_path / "stale"
    work_dir.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import json
    import socket

    owner = {"host": socket.gethostname(), "pid": int(gone.stdout), "since": "earlier"}
    (work_dir / LOCK_FILE).write_text(json.dumps(owner))
    metric = quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    assert "bbox_mAP" in metric and not (work_dir / LOCK_FILE).exists()


def test_lock_held_on_another_host_is_refused_naming_it(tiny_run, tmp_path):
    config, checkpoint, q_path, _ = tiny_run
    work_dir = tmp_path / "other_host"
    work_dir.mkdir()
    (work_dir / LOCK_FILE).write_text('{"host": "node-17", "pid": 4242, "since": "2026-01-01 00:00:00"}')
    with pytest.raises(WorkDirError, match=r"process 4242 on host node-17 .*delete .*\.lock"):
        quant_coco.main(quant_coco_argv(config, checkpoint, q_path, work_dir))
    assert sorted(p.name for p in work_dir.iterdir()) == [LOCK_FILE]


def test_work_dir_that_cannot_be_created_is_named_before_calibration(tiny_run, tmp_path, monkeypatch):
    config, checkpoint, q_path, _ = tiny_run
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")

    def refuse(*args, **kwargs):
        raise AssertionError("the detector was built before the bad work dir was reported")

    monkeypatch.setattr(quant_coco, "load_detector", refuse)
    with pytest.raises(WorkDirError, match=rf"work dir {blocker}/wd cannot be created"):
        quant_coco.main(quant_coco_argv(config, checkpoint, q_path, blocker / "wd"))


# ------------------------------------------------------------------------------ unsupported models, before the data
@pytest.mark.parametrize("field, value", [("type", "YOLOV3"), ("backbone.type", "SwinTransformer")])
def test_unsupported_model_type_is_named_with_the_supported_list_before_the_data(tmp_path, field, value):
    model = {"type": "RetinaNet", "backbone": {"type": "ResNet", "depth": 18}, "neck": None, "bbox_head": None}
    if field == "type":
        model["type"] = value
    else:
        model["backbone"]["type"] = value
    missing_data = tmp_path / "no_such_data"  # reading the data would fail on these paths first
    config = write_tiny_config(tmp_path / "unsupported.py", missing_data, model)
    q_path = tmp_path / "q.yaml"
    q_path.write_text(yaml.safe_dump(q_config()))
    with pytest.raises(UnsupportedModelError) as raised:
        quant_coco.main(quant_coco_argv(config, tmp_path / "none.pth", q_path, tmp_path / "wd"))
    message = str(raised.value)
    assert value in message and f"model.{field}" in message and str(config) in message
    for supported in ("RetinaNet", "FasterRCNN", "ResNet", "FPN", "RetinaHead"):
        assert supported in message
    assert not (tmp_path / "wd").exists()


# ---------------------------------------------------------------------------------- one message, not a traceback
def test_user_errors_print_one_message_and_debug_shows_the_traceback(tiny_run, tmp_path):
    config, checkpoint, _, _ = tiny_run
    command = [sys.executable, "tools/test.py", str(config), str(checkpoint), "--eval", "bboxx"]
    plain = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=ENV)
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("error: metric 'bboxx' is not supported")
    debug = subprocess.run(command + ["--debug"], cwd=REPO_ROOT, capture_output=True, text=True, env=ENV)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_segm_metric_of_a_detector_without_masks_is_refused_before_the_data(tmp_path):
    from qdrop.solver.preflight import RunInputError

    config = write_tiny_config(tmp_path / "retinanet.py", tmp_path / "no_such_data")
    q_path = tmp_path / "q.yaml"
    q_path.write_text(yaml.safe_dump(q_config()))
    argv = quant_coco_argv(config, tmp_path / "none.pth", q_path, tmp_path / "wd")
    argv[argv.index("bbox")] = "segm"
    with pytest.raises(RunInputError, match=r"--eval segm: the RetinaNet of this config predicts no masks"):
        quant_coco.main(argv)
    assert not (tmp_path / "wd").exists()

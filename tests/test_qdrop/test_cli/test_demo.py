"""qdrop/cli/demo.py: its refusals, its table and how it splits the work between processes."""

import pytest

from qdrop.cli import demo
from qdrop.solver.command import run_command


def test_demo_without_checkpoints_explains_and_fails(tmp_path, capsys):
    assert (
        run_command(demo.main, ["--work-dir", str(tmp_path / "demo"), "--checkpoint-dir", str(tmp_path / "none")]) == 2
    )
    message = capsys.readouterr().err
    assert "retinanet_tiny_synth.pth is missing" in message and "tools/train.py" in message
    assert not (tmp_path / "demo").exists()
    table = demo.format_table({"retinanet": {column: 0.5 for column in demo.COLUMNS}})
    assert "W2A4 QDrop" in table and "50.0" in table


def test_one_process_runs_each_model_whole():
    args = demo.parse_args(["--jobs", "1", "--work-dir", "wd"])
    jobs = demo.plan_jobs(args, "wd/demo.log")
    assert [(job.model, job.settings) for job in jobs] == [(name, tuple(demo.SETTINGS)) for name in demo.DEFAULT_MODELS]
    assert all(job.show_progress for job in jobs)
    assert [job.report_dir for job in jobs] == ["wd/report_retinanet", None]


def test_several_processes_split_models_and_settings():
    args = demo.parse_args(["--jobs", "2", "--work-dir", "wd", "--threads", "1"])
    jobs = demo.plan_jobs(args, "wd/demo.log")
    assert sorted((job.model, job.settings) for job in jobs) == sorted(
        (name, (setting,)) for name in demo.DEFAULT_MODELS for setting in demo.SETTINGS
    )
    assert jobs[0].model == "faster_rcnn"  # the slowest model starts first
    assert not any(job.show_progress for job in jobs)
    reporting = [job for job in jobs if job.report_dir is not None]
    assert [(job.model, job.settings, job.report_dir) for job in reporting] == [
        ("retinanet", (demo.REPORTED_RUN.split()[0],), "wd/report_retinanet")
    ]
    assert {job.log_file for job in jobs} == {"wd/demo.log"}


def test_the_tiny_fcos_is_chosen_by_name(tmp_path, capsys):
    assert demo.DEFAULT_MODELS == ["retinanet", "faster_rcnn"]
    args = demo.parse_args(["--models", "fcos", "--jobs", "1", "--work-dir", "wd", "--checkpoint-dir", "ckpt"])
    (job,) = demo.plan_jobs(args, "wd/demo.log")
    assert (job.model, job.checkpoint, job.report_dir) == ("fcos", "ckpt/fcos_tiny_synth.pth", "wd/report_fcos")
    assert demo.MODELS["fcos"][0] == "configs/tiny/fcos_tiny_synth.py"
    argv = ["--models", "fcos", "--work-dir", str(tmp_path / "demo"), "--checkpoint-dir", str(tmp_path / "none")]
    assert run_command(demo.main, argv) == 2
    message = capsys.readouterr().err
    assert "fcos_tiny_synth.pth is missing" in message and "configs/tiny/fcos_tiny_synth.py" in message


def test_every_demo_model_has_its_config_and_committed_checkpoint():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    for name, (config, checkpoint) in demo.MODELS.items():
        assert (root / config).is_file(), name
        assert (root / "checkpoints" / checkpoint).is_file(), name


@pytest.mark.parametrize("flag", [["--jobs", "0"], ["--threads", "0"]])
def test_demo_refuses_zero_jobs_or_threads(flag, capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(flag)
    assert "at least 1" in capsys.readouterr().err


def test_demo_script_ends_through_the_command_wrapper(tmp_path):
    """exp/demo.py, started from another directory: a missing checkpoint is one message and exit status 2."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "exp" / "demo.py"
    result = subprocess.run(
        [sys.executable, str(script), "--work-dir", str(tmp_path / "demo"), "--checkpoint-dir", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "retinanet_tiny_synth.pth is missing" in result.stderr and "Traceback" not in result.stderr


def test_mask_rcnn_gets_a_segm_row_and_a_title_that_says_so():
    from mmengine.config import Config

    assert demo.metric_names(
        Config(dict(model=dict(type="MaskRCNN", roi_head=dict(mask_head=dict(type="FCNMaskHead")))))
    ) == [
        "bbox",
        "segm",
    ]
    assert demo.metric_names(Config(dict(model=dict(type="RetinaNet")))) == ["bbox"]
    summary = {
        demo.row_name("mask_rcnn", metric): {column: 0.5 for column in demo.COLUMNS} for metric in ("bbox", "segm")
    }
    table = demo.format_table(summary)
    assert table.splitlines()[0] == "mAP (bbox; rows '<model> segm': mask) (%) on the synthetic val set"
    assert "mask_rcnn segm" in table
    only_boxes = demo.format_table({"retinanet": {column: 0.5 for column in demo.COLUMNS}})
    assert only_boxes.splitlines()[0] == "bbox mAP (%) on the synthetic val set"

"""The metrics record: one writer for every command, atomic (a failed write leaves the previous complete file)."""

import json
import os

import pytest

from qdrop.solver import evaluation


def test_record_holds_the_sources_and_the_metrics(tmp_path):
    path = evaluation.write_eval_record(str(tmp_path), "20260101_000000", {"bbox_mAP": 0.5}, config="c.py", onnx="m")
    assert os.path.basename(path) == "eval_20260101_000000.json"
    assert json.loads(open(path).read()) == {"config": "c.py", "onnx": "m", "metric": {"bbox_mAP": 0.5}}


def test_interrupted_write_keeps_the_previous_record(tmp_path, monkeypatch):
    path = evaluation.write_eval_record(str(tmp_path), "stamp", {"bbox_mAP": 0.5}, config="c.py")
    before = open(path).read()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process is stopped between writing the new file and renaming it

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        evaluation.write_eval_record(str(tmp_path), "stamp", {"bbox_mAP": 0.9}, config="c.py")
    assert open(path).read() == before
    assert sorted(os.listdir(tmp_path)) == ["eval_stamp.json"]  # no partial file left beside it


def test_every_command_writes_its_record_through_one_function():
    import inspect

    from qdrop.cli import test, test_onnx
    from qdrop.solver import quant_coco

    for module in (quant_coco, test, test_onnx):
        source = inspect.getsource(module)
        assert "write_eval_record(" in source and "eval_{" not in source, module.__name__

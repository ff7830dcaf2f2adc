"""Config files are read as data: mmdetection's format evaluates as it would in Python, and nothing in a file runs."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mmengine.config import Config

from mmdet.utils import (
    ConfigFileError,
    ConfigSyntaxError,
    UnsafeConfigError,
    load_config,
    read_config_file,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------------------------ nothing runs
@pytest.mark.parametrize(
    "source, construct",
    [
        ("import os\nos.system('touch {marker}')\n", "'Import'"),
        ("x = __import__('os').system('touch {marker}')\n", "calling '__import__'"),
        ("x = open('{marker}', 'w')\n", "calling 'open'"),
        ("x = ().__class__.__base__.__subclasses__()\n", "attribute access"),
        ("model = dict(hook=(lambda: __import__('os').system('touch {marker}')))\n", "'Lambda'"),
        ("def f():\n    pass\n", "'FunctionDef'"),
        ("for i in range(3):\n    x = i\n", "'For'"),
        ("x = 'touch {marker}'.format()\n", "calling '.format'"),
        ("with open('{marker}') as f:\n    pass\n", "'With'"),
    ],
)
def test_code_in_a_config_is_refused_and_does_not_run(tmp_path, source, construct):
    marker = tmp_path / "ran"
    config = _write(tmp_path / "bad.py", source.format(marker=marker))
    with pytest.raises(UnsafeConfigError) as raised:
        load_config(str(config))
    message = str(raised.value)
    assert str(config) in message and "line " in message and construct in message
    assert not marker.exists()


def test_code_in_a_base_config_is_refused(tmp_path):
    marker = tmp_path / "ran"
    _write(tmp_path / "_base_/model.py", f"import os\nos.system('touch {marker}')\nmodel = dict(type='RetinaNet')\n")
    child = _write(tmp_path / "child.py", "_base_ = './_base_/model.py'\n")
    with pytest.raises(UnsafeConfigError, match=r"model\.py, line 1"):
        load_config(str(child))
    assert not marker.exists()


def test_tools_test_refuses_a_config_that_would_run_code_with_one_message(tmp_path):
    marker = tmp_path / "ran"
    config = _write(tmp_path / "bad.py", f"import os\nos.system('touch {marker}')\n")
    result = subprocess.run(
        [sys.executable, "tools/test.py", str(config), str(tmp_path / "none.pth"), "--eval", "bbox"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: config file {config}, line 1")
    assert not marker.exists()


@pytest.mark.parametrize(
    "source",
    ["x = 'a' * 10 ** 9\n", "x = 2 ** 10 ** 6\n", "x = list(range(10 ** 9))\n", "x = [0 for i in range(10 ** 7)]\n"],
)
def test_a_config_cannot_make_the_reader_allocate_without_bound(tmp_path, source):
    config = _write(tmp_path / "big.py", source)
    with pytest.raises(ConfigFileError, match=r"at most"):
        read_config_file(str(config))


@pytest.mark.parametrize(
    "source, error",
    [
        ("x = " + "-" * 100_000 + "1\n", ConfigSyntaxError),  # too deep for Python's parser
        ("x = " + "-" * 2_000 + "1\n", ConfigFileError),  # parses, too deep to evaluate
    ],
)
def test_a_deeply_nested_expression_is_an_error_naming_the_file(tmp_path, source, error):
    config = _write(tmp_path / "deep.py", source)
    with pytest.raises(error, match=r"deep\.py"):
        read_config_file(str(config))


# ---------------------------------------------------------------------------------------- mmdetection's format
def test_the_constructs_of_mmdetection_configs_evaluate_as_in_python(tmp_path):
    source = """
        '''A docstring.'''
        norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
        img_scale = (640, 640)
        depths = [2, 2, 6]
        stride = 550.0 / 69
        border = (-img_scale[0] // 2, -img_scale[1] // 2)
        custom_keys = {'pos_block': dict(decay_mult=0.0)}
        custom_keys.update({
            f'backbone.stages.{stage_id}.blocks.{block_id}.norm': dict(lr_mult=0.1)
            for stage_id, num_blocks in enumerate(depths)
            for block_id in range(num_blocks)
        })
        stages = [dict(kind='Stage', index=i, **norm_cfg) for i in range(len(depths) - 1) if i != 1]
        scales = [(1333, value) for value in (480, 512)][::-1]
        name = 'r' + str(50) + ('-caffe' if True else '')
        flag = not (1 < 2 <= 2) or None
        _hidden = 1
        __dunder = 2
    """
    config = read_config_file(str(_write(tmp_path / "all.py", source)))
    namespace: dict = {}
    exec(textwrap.dedent(source), namespace)  # the oracle: the same trusted text run as Python
    expected = {key: value for key, value in namespace.items() if not key.startswith("__")}
    assert config == expected
    assert len(config["custom_keys"]) == 1 + 2 + 2 + 6 and config["border"] == (-320, -320)
    assert "__dunder" not in config and config["_hidden"] == 1


def test_bases_merge_dict_by_dict_and_delete_replaces(tmp_path):
    _write(
        tmp_path / "_base_/model.py",
        """
        model = dict(type='RetinaNet', backbone=dict(type='ResNet', depth=50, frozen_stages=1), neck=dict(type='FPN'))
        optimizer = dict(type='SGD', lr=0.02, momentum=0.9)
        """,
    )
    _write(tmp_path / "_base_/schedule.json", '{"runner": {"type": "EpochBasedRunner", "max_epochs": 12}}')
    _write(tmp_path / "_base_/runtime.yaml", "log_level: INFO\n")
    child = _write(
        tmp_path / "child.py",
        """
        _base_ = ['./_base_/model.py', './_base_/schedule.json', './_base_/runtime.yaml']
        model = dict(backbone=dict(depth=101))
        optimizer = dict(_delete_=True, type='AdamW', lr=0.001)
        runner = dict(max_epochs=24)
        """,
    )
    cfg = load_config(str(child))
    assert cfg.model.backbone.to_dict() == {"type": "ResNet", "depth": 101, "frozen_stages": 1}
    assert cfg.model.neck.type == "FPN"
    assert cfg.optimizer.to_dict() == {"type": "AdamW", "lr": 0.001}
    assert cfg.runner.to_dict() == {"type": "EpochBasedRunner", "max_epochs": 24}
    assert cfg.log_level == "INFO" and "_base_" not in cfg


def test_every_config_of_the_project_reads_as_mmengine_runs_it():
    configs = sorted((REPO_ROOT / "configs").rglob("*.py"))
    assert len(configs) > 20
    for path in configs:
        ours = Config(read_config_file(str(path)), filename=str(path))._cfg_dict.to_dict()
        assert ours == Config.fromfile(str(path))._cfg_dict.to_dict(), path  # the oracle runs our own trusted files


# ------------------------------------------------------------------------------------------- errors name the place
@pytest.mark.parametrize(
    "files, error, expected",
    [
        ({"c.py": "model = dict(depth=depth)\n"}, ConfigFileError, r"c\.py, line 1: name 'depth' is not defined"),
        ({"c.py": "x = 1 / 0\n"}, ConfigFileError, r"c\.py, line 1: ZeroDivisionError"),
        ({"c.py": "n = dict(a=1)\nx = dict(a=2, **n)\n"}, ConfigFileError, r"line 2: .*multiple values for .*'a'"),
        ({"c.py": "model = dict(\n"}, ConfigSyntaxError, r"c\.py, line 1"),
        ({"c.py": "_base_ = './missing.py'\n"}, ConfigFileError, r"not found: .*missing\.py \(named in _base_ of"),
        ({"c.py": "_base_ = './c.py'\n"}, ConfigFileError, r"is its own base"),
        (
            {"a.py": "x = 1\n", "b.py": "x = 2\n", "c.py": "_base_ = ['./a.py', './b.py']\n"},
            ConfigFileError,
            r"key 'x' is defined by two of its bases, \./a\.py and \./b\.py",
        ),
        (
            {"a.py": "model = 3\n", "c.py": "_base_ = './a.py'\nmodel = dict(depth=50)\n"},
            ConfigFileError,
            r"'model' is a dict but its base value is a int; set _delete_=True",
        ),
        ({"c.py": "filename = 'x'\n"}, ConfigFileError, r"filename cannot be a top-level key"),
    ],
)
def test_a_config_that_cannot_be_read_is_named_with_the_reason(tmp_path, files, error, expected):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(error, match=expected):
        load_config(str(tmp_path / "c.py"))

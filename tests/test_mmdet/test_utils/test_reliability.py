"""Bad inputs on the mmdet side get an error naming the file, key or tensor: configs, --cfg-options, checkpoints."""

import pytest
import torch
from torch import nn

from mmdet.utils import (
    CheckpointFileError,
    NonFiniteWeightsError,
    UnknownConfigKeyError,
    load_checkpoint,
    load_config,
    save_checkpoint,
)


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MMDET_DATASETS", raising=False)
    (tmp_path / "base.py").write_text(
        "data = dict(samples_per_gpu=2,\n"
        "    train=dict(type='CocoDataset', ann_file='train.json', pipeline=[dict(type='A'), dict(type='B')]),\n"
        "    test=dict(type='CocoDataset', ann_file='val.json'))\n"
        "model = dict(type='RetinaNet', test_cfg=dict(max_per_img=100))\n"
    )
    (tmp_path / "child.py").write_text("_base_ = './base.py'\nmodel = dict(test_cfg=dict(score_thr=0.05))\n")
    return tmp_path / "child.py"


def test_existing_keys_list_values_and_list_elements_still_apply(config_file):
    cfg = load_config(
        str(config_file),
        {"data.test.ann_file": "fixed.json", "model.test_cfg.max_per_img": [5, 6], "data.train.pipeline.1.type": "C"},
    )
    assert cfg.data.test.ann_file == "fixed.json" and cfg.model.test_cfg.max_per_img == [5, 6]
    assert [step.type for step in cfg.data.train.pipeline] == ["A", "C"]


def test_misspelled_key_is_an_error_naming_the_nearest_keys(config_file):
    with pytest.raises(UnknownConfigKeyError) as info:
        load_config(str(config_file), {"data.tset.ann_file": "x.json"})
    message = str(info.value)
    assert "'data.tset.ann_file' is not in the config" in message and str(config_file) in message
    assert "'data' has no entry 'tset'" in message
    assert "nearest existing keys: data.test.ann_file" in message and "+data.tset.ann_file=" in message


@pytest.mark.parametrize(
    "key, where",
    [
        ("modle.type", "there is no top-level 'modle'"),
        ("data.train.pipeline.7.type", "'data.train.pipeline' has no entry '7'"),
        ("model.type.name", "'model.type' has no entry 'name'"),
    ],
)
def test_unknown_paths_through_lists_and_scalars(config_file, key, where):
    with pytest.raises(UnknownConfigKeyError, match=where):
        load_config(str(config_file), {key: 1})


def test_plus_prefix_adds_a_new_key(config_file):
    cfg = load_config(str(config_file), {"+model.test_cfg.nms_pre": 50, "+extra.deep.key": "v"})
    assert cfg.model.test_cfg.nms_pre == 50 and cfg.extra.deep.key == "v"
    assert cfg.model.test_cfg.max_per_img == 100


def test_syntax_error_names_the_config_file_and_line(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("model = dict(type='RetinaNet')\ndata = dict(samples_per_gpu=2,\n")
    with pytest.raises(SyntaxError, match=rf"config file {bad}, line 2: '\(' was never closed"):
        load_config(str(bad))


def test_syntax_error_in_a_base_file_names_that_file(config_file):
    base = config_file.parent / "base.py"
    base.write_text("x = 1\ny = [1,, 2]\n")
    with pytest.raises(SyntaxError, match=rf"config file {base}, line 2"):
        load_config(str(config_file))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(2, 2, 1) for _ in range(6))
        self.bn = nn.BatchNorm2d(2)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "float.pth"
    save_checkpoint(_Tiny(), str(path))
    return path


def test_text_file_as_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("this is a readme, not weights\n")
    with pytest.raises(CheckpointFileError, match=rf"'{path}' \(30 bytes\) is a text file"):
        load_checkpoint(_Tiny(), str(path))


def test_empty_checkpoint(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointFileError, match=rf"'{path}' is empty \(0 bytes\)"):
        load_checkpoint(_Tiny(), str(path))


@pytest.mark.parametrize("zip_format", [True, False])
@pytest.mark.parametrize("keep", [0.2, 0.5, 0.95])
def test_truncated_checkpoint(tmp_path, zip_format, keep):
    path = tmp_path / "cut.pth"
    torch.save({"state_dict": _Tiny().state_dict()}, path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointFileError, match=rf"'{path}'.* truncated or corrupt"):
        load_checkpoint(_Tiny(), str(path))


def test_non_finite_weights_are_named_and_nothing_is_loaded(saved):
    checkpoint = torch.load(saved, weights_only=True)
    checkpoint["state_dict"]["convs.1.weight"][0, 0] = float("nan")
    checkpoint["state_dict"]["bn.running_var"][1] = float("inf")
    torch.save(checkpoint, saved)
    model = _Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteWeightsError) as info:
        load_checkpoint(model, str(saved))
    assert str(saved) in str(info.value)
    assert "in 2 tensor(s): convs.1.weight, bn.running_var;" in str(info.value)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_non_finite_list_is_capped_at_ten_names(saved):
    checkpoint = torch.load(saved, weights_only=True)
    for i in range(6):
        checkpoint["state_dict"][f"convs.{i}.weight"].fill_(float("nan"))
        checkpoint["state_dict"][f"convs.{i}.bias"].fill_(float("-inf"))
    torch.save(checkpoint, saved)
    with pytest.raises(NonFiniteWeightsError, match=r"in 12 tensor\(s\): convs.0.weight, .*convs.4.bias and 2 more"):
        load_checkpoint(_Tiny(), str(saved))

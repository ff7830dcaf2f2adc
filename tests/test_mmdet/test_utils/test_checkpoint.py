"""load_checkpoint / save_checkpoint (weights-only loading) and fuse_conv_bn on small models."""

import logging
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from mmdet.models.backbones import ResNet
from mmdet.models.necks import FPN
from mmdet.utils import (
    ALLOW_PICKLE_ENV,
    CheckpointFileError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    UserError,
    fuse_conv_bn,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


class TinyDetector(nn.Module):
    """Backbone + neck with the detectors' attribute names; enough to exercise checkpoint keys."""

    def __init__(self, depth: int = 18, base_channels: int = 8):
        super().__init__()
        self.backbone = ResNet(depth, base_channels=base_channels)
        expansion = 4 if depth >= 50 else 1
        self.neck = FPN([base_channels * 2**i * expansion for i in range(4)], 16, num_outs=5)

    def forward(self, x):
        return self.neck(self.backbone(x))


def _randomize_bn(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so that fusion has something to fold."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def test_round_trip_with_meta_and_classes(tmp_path):
    model = TinyDetector()
    _randomize_bn(model)
    model.CLASSES = ("cat", "dog")
    path = tmp_path / "sub" / "epoch_1.pth"
    save_checkpoint(model, str(path), meta=dict(epoch=1))
    assert path.exists() and not any(p.name.startswith(".tmp_") for p in path.parent.iterdir())
    other = TinyDetector()
    checkpoint = load_checkpoint(other, str(path))
    assert checkpoint["meta"]["CLASSES"] == ("cat", "dog") and checkpoint["meta"]["epoch"] == 1
    for key, value in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value)


def test_module_prefix_and_bare_state_dict(tmp_path):
    model = TinyDetector()
    _randomize_bn(model)
    wrapped = OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    path = tmp_path / "bare.pth"
    torch.save(wrapped, path)
    other = TinyDetector()
    load_checkpoint(other, str(path))
    torch.testing.assert_close(other.backbone.bn1.running_var, model.backbone.bn1.running_var)


def test_missing_num_batches_tracked_is_tolerated(tmp_path, caplog):
    model = TinyDetector()
    state = OrderedDict((k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    path = tmp_path / "old.pth"
    torch.save({"state_dict": state, "meta": {}}, path)
    with caplog.at_level(logging.INFO, logger="mmdet"):
        load_checkpoint(TinyDetector(), str(path))
    assert "num_batches_tracked" in caplog.text


def test_other_architecture_is_refused(tmp_path):
    path = tmp_path / "r50.pth"
    save_checkpoint(TinyDetector(depth=50), str(path))
    with pytest.raises(CheckpointMismatchError, match=r"backbone\.layer1\.0\.conv1\.weight: checkpoint \(8, 8, 1, 1\)"):
        load_checkpoint(TinyDetector(depth=18), str(path))
    assert issubclass(CheckpointMismatchError, ValueError)


def test_deeper_backbone_extra_keys_are_refused(tmp_path):
    path = tmp_path / "r34.pth"
    save_checkpoint(TinyDetector(depth=34), str(path))  # R34 = R18 blocks plus more of them
    with pytest.raises(CheckpointMismatchError, match=r"backbone\.layer1\.2\."):
        load_checkpoint(TinyDetector(depth=18), str(path))


def test_missing_weights_are_refused(tmp_path):
    model = TinyDetector()
    state = OrderedDict((k, v) for k, v in model.state_dict().items() if not k.startswith("neck."))
    path = tmp_path / "backbone_only.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError, match=r"missing.*neck\.lateral_convs\.0\.conv\.weight"):
        load_checkpoint(TinyDetector(), str(path))


def test_unrelated_extra_keys_are_reported_not_fatal(tmp_path, caplog):
    model = TinyDetector()
    state = model.state_dict()
    state["ema_step"] = torch.tensor(3)
    path = tmp_path / "extra.pth"
    torch.save({"state_dict": state}, path)
    with caplog.at_level(logging.WARNING, logger="mmdet"):
        load_checkpoint(TinyDetector(), str(path))
    assert "ema_step" in caplog.text
    with pytest.raises(CheckpointMismatchError, match="ema_step"):
        load_checkpoint(TinyDetector(), str(path), strict=True)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(TinyDetector(), str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("depth", [18, 50])
def test_fuse_conv_bn_matches_unfused(depth):
    model = TinyDetector(depth=depth).eval()
    _randomize_bn(model)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        fuse_conv_bn(model)
        fused = model(x)
    for a, b in zip(fused, expected):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    keys = list(model.state_dict())
    assert not any(".bn" in k or "downsample.1" in k for k in keys)
    assert "backbone.conv1.bias" in keys and "backbone.layer1.0.conv2.bias" in keys
    assert isinstance(model.backbone.bn1, nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    if depth == 50:
        assert "backbone.layer2.0.downsample.0.bias" in keys and "backbone.layer3.1.conv3.bias" in keys
    assert "neck.fpn_convs.0.conv.bias" in keys and len([k for k in keys if k.startswith("neck.")]) == 16


def test_fuse_formula_and_lonely_bn():
    conv = nn.Conv2d(2, 3, 1, bias=True)
    bn = nn.BatchNorm2d(3)
    _randomize_bn(bn)
    parent = nn.Sequential(OrderedDict(bn0=nn.BatchNorm2d(2), conv=conv, act=nn.ReLU(), bn=bn))
    weight, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
    factor = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fuse_conv_bn(parent)
    assert isinstance(parent.bn0, nn.BatchNorm2d)  # no conv before it: left alone
    assert isinstance(parent.bn, nn.Identity)  # the ReLU in between does not clear the remembered conv
    torch.testing.assert_close(parent.conv.weight.detach(), weight * factor.view(3, 1, 1, 1))
    torch.testing.assert_close(parent.conv.bias.detach(), (bias - bn.running_mean) * factor + bn.bias.detach())


class _RunsCode:
    """Pickles as a call of ``exec`` that creates ``marker``: a harmless stand-in for a hostile shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",)


@pytest.fixture
def hostile_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    marker = tmp_path / "code_ran"
    path = tmp_path / "downloaded.pth"
    torch.save({"state_dict": TinyDetector().state_dict(), "meta": {"note": _RunsCode(marker)}}, path)
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize("reader", ["read_checkpoint", "load_checkpoint"])
def test_checkpoint_that_runs_code_is_refused(hostile_checkpoint, reader):
    path, marker = hostile_checkpoint
    with pytest.raises(UnsafeCheckpointError) as info:
        if reader == "read_checkpoint":
            read_checkpoint(str(path))
        else:
            load_checkpoint(TinyDetector(), str(path))
    message = str(info.value)
    assert str(path) in message and "exec" in info.value.offending_global and info.value.offending_global in message
    assert "would execute code" in message and f"{ALLOW_PICKLE_ENV}=1" in message
    assert isinstance(info.value, CheckpointFileError) and isinstance(info.value, UserError)
    assert not marker.exists()


def test_legacy_format_checkpoint_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    marker = tmp_path / "code_ran"
    path = tmp_path / "old_style.pth"
    torch.save({"meta": {"note": _RunsCode(marker)}}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="exec"):
        read_checkpoint(str(path))
    assert not marker.exists()


def test_os_system_global_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)

    class Shell:
        def __reduce__(self):
            return os.system, ("true",)

    path = tmp_path / "shell.pth"
    torch.save({"meta": Shell()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"the global (posix|nt)\.system"):
        read_checkpoint(str(path))


@pytest.mark.parametrize("value", ["0", "", "no"])
def test_allow_pickle_must_be_switched_on(hostile_checkpoint, monkeypatch, value):
    path, marker = hostile_checkpoint
    monkeypatch.setenv(ALLOW_PICKLE_ENV, value)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(str(path))
    assert not marker.exists()


def test_allow_pickle_loads_a_trusted_file_with_a_warning_every_time(hostile_checkpoint, monkeypatch, caplog):
    path, marker = hostile_checkpoint
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="mmdet"):
        checkpoint = load_checkpoint(TinyDetector(), str(path))
        read_checkpoint(str(path))
    assert marker.exists() and "state_dict" in checkpoint
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    warnings = [message for message in warnings if "full unpickling" in message]
    assert len(warnings) == 2 and all(str(path) in w and ALLOW_PICKLE_ENV in w for w in warnings)


def test_mmdetection_checkpoint_with_numpy_meta_loads_intact(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    model = TinyDetector()
    _randomize_bn(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(2, 3, 64, 64))[0].sum().backward()
    optimizer.step()
    meta = dict(
        epoch=3,
        iter=np.int64(5),
        hook_msgs=dict(best_score=np.float64(0.4), best_ckpt="epoch_3.pth", last_ckpt="epoch_3.pth"),
        CLASSES=("cat", "dog"),
        mmdet_version="2.28.2",
        config="model = dict(type='RetinaNet')",
        extra=dict(mask=np.array([[1.5, 2.0]], dtype=np.float32), flag=np.bool_(True), dtype=np.dtype("int16")),
    )
    path = tmp_path / "epoch_3.pth"
    torch.save(dict(meta=meta, state_dict=model.state_dict(), optimizer=optimizer.state_dict()), path)
    with caplog.at_level(logging.WARNING, logger="mmdet"):
        checkpoint = load_checkpoint(TinyDetector(), str(path))
    assert "full unpickling" not in caplog.text
    loaded = checkpoint["meta"]
    assert loaded["iter"] == 5 and isinstance(loaded["iter"], np.int64) and loaded["epoch"] == 3
    assert loaded["hook_msgs"]["best_score"] == 0.4 and isinstance(loaded["hook_msgs"]["best_score"], np.float64)
    np.testing.assert_array_equal(loaded["extra"]["mask"], meta["extra"]["mask"])
    assert loaded["extra"]["flag"] and loaded["extra"]["dtype"] == np.dtype("int16")
    saved_state = optimizer.state_dict()["state"]
    assert set(checkpoint["optimizer"]["state"]) == set(saved_state)
    for index, state in saved_state.items():
        torch.testing.assert_close(checkpoint["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"])


def test_numpy_1_names_of_scalars_load(tmp_path, monkeypatch):
    """Checkpoints written under numpy 1 name numpy.core.multiarray.scalar; numpy 2 writes numpy._core."""
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    path = tmp_path / "numpy1.pth"
    torch.save({"meta": {"iter": np.int64(7), "best": np.float64(0.25)}}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    for name in (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"):
        path.write_bytes(data.replace(b"numpy._core.multiarray\n", name).replace(b"numpy.core.multiarray\n", name))
        meta = read_checkpoint(str(path))["meta"]
        assert meta["iter"] == 7 and meta["best"] == 0.25


def test_a_checkpoint_without_a_dict_is_a_file_error(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointFileError, match="holds a list; expected a dict"):
        read_checkpoint(str(path))


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_checkpoint(str(tmp_path / "absent.pth"))
    assert isinstance(info.value, UserError) and "absent.pth" in str(info.value)

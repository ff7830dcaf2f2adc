"""mmdet.utils: config loading with overrides, distributed helpers, logger."""

import logging
import os
import socket
import stat

import pytest
import torch
import torch.distributed as dist

from mmdet.utils import barrier, get_dist_info, get_root_logger, init_dist, is_main_process, load_config
from mmdet.utils.dist_utils import resolve_backend, slurm_master_addr


@pytest.fixture
def config_file(tmp_path):
    (tmp_path / "base.py").write_text(
        "data_root = 'data/coco/'\n"
        "data = dict(samples_per_gpu=2, workers_per_gpu=2,\n"
        "    train=dict(type='CocoDataset', ann_file=data_root + 'annotations/train.json',\n"
        "               img_prefix=data_root + 'train/'),\n"
        "    test=dict(type='CocoDataset', ann_file=data_root + 'annotations/val.json',\n"
        "              img_prefix=data_root + 'val/'))\n"
        "model = dict(type='RetinaNet', backbone=dict(depth=50))\n"
    )
    (tmp_path / "child.py").write_text("_base_ = './base.py'\nmodel = dict(backbone=dict(depth=101))\n")
    return tmp_path / "child.py"


def test_load_config_inherits_and_applies_cfg_options(config_file, monkeypatch):
    monkeypatch.delenv("MMDET_DATASETS", raising=False)
    cfg = load_config(str(config_file), {"data.samples_per_gpu": 4, "model.backbone.depth": 18})
    assert cfg.model.type == "RetinaNet" and cfg.model.backbone.depth == 18
    assert cfg.data.samples_per_gpu == 4
    assert cfg.data.test.ann_file == "data/coco/annotations/val.json"


def test_mmdet_datasets_env_relocates_data_paths(config_file, monkeypatch):
    monkeypatch.setenv("MMDET_DATASETS", "/datasets/mscoco2017/")
    cfg = load_config(str(config_file))
    assert cfg.data_root == "/datasets/mscoco2017/"
    assert cfg.data.train.ann_file == "/datasets/mscoco2017/annotations/train.json"
    assert cfg.data.test.img_prefix == "/datasets/mscoco2017/val/"


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config(str(tmp_path / "nope.py"))


def test_dist_helpers_without_process_group():
    assert get_dist_info() == (0, 1) and is_main_process()
    barrier()  # no-op
    with pytest.raises(ValueError, match="launcher"):
        init_dist("mpi")


def test_nccl_without_cuda_falls_back_to_gloo(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="gloo"):
        assert resolve_backend("nccl") == "gloo"
    assert resolve_backend(None) == "gloo"


def test_pytorch_launcher_names_missing_env(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(KeyError, match="RANK"):
        init_dist("pytorch", backend="gloo")


def _fake_scontrol(directory, hosts):
    script = directory / "scontrol"
    script.write_text("#!/bin/sh\n" + "".join(f"echo {h}\n" for h in hosts))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_slurm_launcher_uses_first_host_and_env(tmp_path, monkeypatch):
    _fake_scontrol(tmp_path, ["127.0.0.1", "node-b"])
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert slurm_master_addr("node-[a-b]") == "127.0.0.1"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, value in dict(
        SLURM_PROCID="0",
        SLURM_NTASKS="1",
        SLURM_NODELIST="node-[a-b]",
        MASTER_PORT=str(port),
        MASTER_ADDR="",
        WORLD_SIZE="",
        RANK="",
        LOCAL_RANK="",
    ).items():
        monkeypatch.setenv(name, value)
    init_dist("slurm", backend="gloo")
    try:
        assert get_dist_info() == (0, 1)
        assert os.environ["MASTER_ADDR"] == "127.0.0.1" and os.environ["WORLD_SIZE"] == "1"
        barrier()
    finally:
        dist.destroy_process_group()


def test_root_logger_writes_file(tmp_path):
    log_file = tmp_path / "run.log"
    logger = get_root_logger(str(log_file))
    assert logger.name == "mmdet" and logger.level == logging.INFO
    logger.info("hello from the test")
    for handler in logger.handlers:
        handler.flush()
    assert "hello from the test" in log_file.read_text()
    assert get_root_logger(str(log_file)) is logger
    assert sum(isinstance(h, logging.FileHandler) for h in logger.handlers) >= 1
    for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(handler)
        handler.close()

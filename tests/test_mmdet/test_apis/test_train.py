"""The training loop: loss parsing, optimiser, a few steps on a fixed batch, and a full train -> test round trip."""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmdet.apis.lr_schedule import current_lr, set_lr
from mmdet.apis.train import train_detector
from mmdet.apis.training.log import LogWindow
from mmdet.apis.training.optimizer import build_optimizer, train_step
from mmdet.apis.training.settings import TrainSettings
from mmdet.datasets import build_dataloader, build_dataset
from mmdet.datasets.synthetic import SYNTHETIC_CLASSES, make_synthetic_coco
from mmdet.models import build_detector
from mmdet.models.detectors.base import parse_losses
from mmdet.utils import load_checkpoint, load_config
from qdrop.cli.train import parse_args

TINY_CONFIGS = ("configs/tiny/retinanet_tiny_synth.py", "configs/tiny/faster_rcnn_tiny_synth.py")
SMALL_SCALE = (192, 128)

# Narrower still than the tiny configs, so a test step takes a fraction of a second.
NARROW = {
    "retinanet": {
        "model.backbone.base_channels": 8,
        "model.neck.in_channels": [8, 16, 32, 64],
        "model.neck.out_channels": 16,
        "model.bbox_head.in_channels": 16,
        "model.bbox_head.feat_channels": 16,
        "model.bbox_head.stacked_convs": 1,
    },
    "faster_rcnn": {
        "model.backbone.base_channels": 4,
        "model.neck.in_channels": [16, 32, 64, 128],
        "model.neck.out_channels": 16,
        "model.rpn_head.in_channels": 16,
        "model.rpn_head.feat_channels": 16,
        "model.roi_head.bbox_roi_extractor.out_channels": 16,
        "model.roi_head.bbox_head.in_channels": 16,
        "model.roi_head.bbox_head.fc_out_channels": 32,
    },
}


def _narrow_options(config: str) -> dict:
    return NARROW["retinanet" if "retinanet" in config else "faster_rcnn"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_data") / "synthetic_coco"
    make_synthetic_coco(root, num_train=4, num_val=2, seed=1)
    return root


def _small_config(config: str, data_root: Path):
    cfg = load_config(config, cfg_options=_narrow_options(config))
    for split in ("train", "val", "test"):
        entry = cfg.data[split]
        entry.ann_file = entry.ann_file.replace(cfg.data_root, f"{data_root}/")
        entry.img_prefix = entry.img_prefix.replace(cfg.data_root, f"{data_root}/")
    cfg.data.train.pipeline[2].img_scale = SMALL_SCALE
    return cfg


# ----------------------------------------------------------------------------------------------- parse_losses
def test_parse_losses_sums_loss_entries_only():
    losses = {
        "loss_cls": [torch.tensor([1.0, 3.0]), torch.tensor(0.5)],  # list: sum of means = 2.5
        "loss_bbox": torch.tensor([[0.25, 0.75]]),  # mean 0.5
        "acc": torch.tensor(97.0),  # logged, not summed
    }
    total, log_vars = parse_losses(losses)
    assert total.item() == pytest.approx(3.0)
    assert log_vars == pytest.approx({"loss_cls": 2.5, "loss_bbox": 0.5, "acc": 97.0, "loss": 3.0})


def test_parse_losses_keeps_the_graph():
    weight = torch.tensor(2.0, requires_grad=True)
    total, _ = parse_losses({"loss_a": weight * 3, "loss_b": [weight, weight * weight]})
    total.backward()
    assert weight.grad.item() == pytest.approx(3 + 1 + 4)


@pytest.mark.parametrize(
    "losses, error, match",
    [
        ({"acc": torch.tensor(1.0)}, ValueError, "no entry whose key contains 'loss'"),
        ({"loss_cls": 1.0}, TypeError, "loss_cls"),
    ],
)
def test_parse_losses_rejects_bad_input(losses, error, match):
    with pytest.raises(error, match=match):
        parse_losses(losses)


# ----------------------------------------------------------------------------------------------- optimizer
def test_train_step_rejects_a_non_finite_loss():
    weight = torch.nn.Parameter(torch.tensor(1.0))

    class Diverged(torch.nn.Module):
        def forward(self, return_loss=True, **batch):
            return {"loss_x": weight * float("nan")}

    model = Diverged()
    model.register_parameter("weight", weight)
    with pytest.raises(FloatingPointError, match="non-finite"):
        train_step(model, {}, torch.optim.SGD([weight], lr=0.1))


def test_build_optimizer_from_config():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    model[1].weight.requires_grad_(False)
    optimizer = build_optimizer(model, dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=1e-4))
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.02, 0.9, 1e-4)
    assert len(group["params"]) == 3  # the frozen BN weight is left out


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(type="Sgd", lr=0.1), "torch.optim"),
        (dict(type="SGD"), "lr"),
        (dict(type="SGD", lr=0.1, paramwise_cfg=dict(norm_decay_mult=0)), "paramwise_cfg sets .* no weight_decay"),
        (dict(type="SGD", lr=0.1, paramwise_cfg=dict(dcn_offset_lr_mult=0.1)), "unknown keys .*dcn_offset_lr_mult"),
    ],
)
def test_build_optimizer_rejects_bad_config(config, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer(torch.nn.Linear(1, 1), config)


def _conv_gn_conv() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.GroupNorm(2, 4),
        torch.nn.Conv2d(4, 4, 3, groups=4),
        torch.nn.Conv2d(4, 2, 1),
    )


def _group_of(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> dict:
    (group,) = [group for group in optimizer.param_groups if any(p is param for p in group["params"])]
    return group


def test_paramwise_cfg_gives_biases_norms_and_depthwise_convs_their_multipliers():
    model = _conv_gn_conv()
    paramwise = dict(bias_lr_mult=2.0, bias_decay_mult=0.0, norm_decay_mult=0.5, dwconv_decay_mult=0.25)
    optimizer = build_optimizer(model, dict(type="SGD", lr=0.01, weight_decay=1e-4, paramwise_cfg=paramwise))
    conv, norm, dwconv, pointwise = model
    expected = {
        conv.weight: (0.01, 1e-4),
        conv.bias: (0.02, 0.0),  # FCOS's rule: biases learn twice as fast and do not decay
        norm.weight: (0.01, 0.5e-4),
        norm.bias: (0.01, 0.5e-4),  # a norm's bias is a norm parameter, not a bias
        dwconv.weight: (0.01, 0.25e-4),
        dwconv.bias: (0.02, 0.25e-4),
        pointwise.bias: (0.02, 0.0),
    }
    for param, (lr, weight_decay) in expected.items():
        group = _group_of(optimizer, param)
        assert group["lr"] == pytest.approx(lr) and group["weight_decay"] == pytest.approx(weight_decay)


def test_paramwise_custom_keys_take_precedence_longest_first():
    model = _conv_gn_conv()
    custom = {"1": dict(lr_mult=0.1), "1.bias": dict(lr_mult=0.0, decay_mult=0.0)}
    optimizer = build_optimizer(
        model, dict(type="AdamW", lr=0.01, weight_decay=0.05, paramwise_cfg=dict(bias_lr_mult=2.0, custom_keys=custom))
    )
    assert _group_of(optimizer, model[1].bias)["lr"] == 0.0 and _group_of(optimizer, model[1].bias)["weight_decay"] == 0
    assert _group_of(optimizer, model[1].weight)["lr"] == pytest.approx(0.001)
    assert _group_of(optimizer, model[0].bias)["lr"] == pytest.approx(0.02)


def test_the_schedule_scales_every_group_by_its_multiplier():
    model = _conv_gn_conv()
    optimizer = build_optimizer(
        model, dict(type="SGD", lr=0.01, weight_decay=1e-4, paramwise_cfg=dict(bias_lr_mult=2.0))
    )
    set_lr(optimizer, 0.5)
    assert _group_of(optimizer, model[0].weight)["lr"] == 0.5 and _group_of(optimizer, model[0].bias)["lr"] == 1.0
    assert current_lr(optimizer) == 0.5


def test_the_logged_lr_skips_groups_that_do_not_learn():
    model = _conv_gn_conv()
    custom = {"0.": dict(lr_mult=0.0)}  # the first conv frozen by its learning rate
    optimizer = build_optimizer(
        model, dict(type="SGD", lr=0.01, weight_decay=1e-4, paramwise_cfg=dict(custom_keys=custom))
    )
    set_lr(optimizer, 0.5)
    assert _group_of(optimizer, model[0].weight)["lr"] == 0.0
    assert current_lr(optimizer) == 0.5


def test_a_shared_parameter_needs_bypass_duplicate():
    conv = torch.nn.Conv2d(2, 2, 1)
    model = torch.nn.Sequential(conv, conv)
    config = dict(type="SGD", lr=0.01, weight_decay=1e-4, paramwise_cfg=dict(bias_decay_mult=0.0))
    with pytest.raises(ValueError, match="parameter 1.weight is shared .*bypass_duplicate"):
        build_optimizer(model, config)
    config["paramwise_cfg"]["bypass_duplicate"] = True
    assert len(build_optimizer(model, config).param_groups) == 2


# ----------------------------------------------------------------------------------------------- config checks
@pytest.mark.parametrize(
    "options, match",
    [
        ({"runner": {"type": "IterBasedRunner", "max_iters": 10}}, "runner.type"),
        ({"runner": {"type": "EpochBasedRunner", "max_epochs": 0}}, "max_epochs"),
        ({"optimizer_config": {"grad_clip": None, "cumulative_iters": 4}}, "optimizer_config"),
        ({"resume_from": "work_dirs/x/latest.pth"}, "resume_from"),
        ({"work_dir": None}, "work_dir"),
        ({"checkpoint_config": {"interval": 0}}, "checkpoint_config.interval"),
        ({"checkpoint_config": {"max_keep_ckpts": "3"}}, "checkpoint_config.max_keep_ckpts"),
        ({"log_config": {"interval": 1.5}}, "log_config.interval"),
        ({"evaluation": {"interval": -1, "metric": "bbox"}}, "evaluation.interval"),
    ],
)
def test_train_detector_rejects_unsupported_settings(options, match, tmp_path):
    cfg = Config(
        dict(
            {
                "work_dir": str(tmp_path),
                "runner": {"type": "EpochBasedRunner", "max_epochs": 1},
                "optimizer_config": {"grad_clip": None},
            },
            **options,
        )
    )
    with pytest.raises(ValueError, match=match):
        train_detector(torch.nn.Linear(1, 1), [object()], cfg)


def test_checkpoints_and_evaluation_follow_their_intervals_and_the_last_epoch(tmp_path):
    cfg = Config(
        dict(
            work_dir=str(tmp_path),
            runner=dict(type="EpochBasedRunner", max_epochs=7),
            checkpoint_config=dict(interval=3),
            evaluation=dict(interval=2, save_best="auto", metric="bbox"),
        )
    )
    settings = TrainSettings.from_config(cfg)
    assert [epoch for epoch in range(1, 8) if settings.checkpoint_due(epoch)] == [3, 6, 7]
    assert [epoch for epoch in range(1, 8) if settings.evaluation_due(epoch)] == [2, 4, 6, 7]
    assert settings.eval_kwargs == {"metric": "bbox"}
    assert (settings.log_interval, settings.max_keep_ckpts, settings.grad_clip) == (50, -1, None)


def test_log_window_averages_since_the_last_record():
    window = LogWindow()
    window.add({"loss": 1.0, "time": 0.5})
    window.add({"loss": 2.0, "time": 1.5, "grad_norm": 4.0})
    assert window.pop_averages() == {"loss": 1.5, "time": 1.0, "grad_norm": 4.0}
    window.add({"loss": 3.0})
    assert window.pop_averages() == {"loss": 3.0}


# ----------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("config", TINY_CONFIGS)
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(config, tiny_data):
    cfg = _small_config(config, tiny_data)
    model = build_detector(cfg.model)
    model.train()
    dataset = build_dataset(cfg.data.train)
    batch = next(iter(build_dataloader(dataset, samples_per_gpu=2, workers_per_gpu=0, seed=0)))
    optimizer = build_optimizer(model, cfg.optimizer)
    losses = [train_step(model, batch, optimizer, grad_clip=dict(max_norm=35))["loss"] for _ in range(8)]
    assert losses[-1] < 0.95 * losses[0], losses


# ----------------------------------------------------------------------------------------------- command line
def test_qdrop_train_is_the_command_of_tools_train(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)  # parse_args sets it for the launcher
    scripts = entry_points()
    scripts = scripts.select(group="console_scripts") if hasattr(scripts, "select") else scripts["console_scripts"]
    assert {script.name: script.value for script in scripts}["qdrop-train"] == "qdrop.cli.train:cli"
    args = parse_args(["configs/tiny/retinanet_tiny_synth.py", "--seed", "3", "--cfg-options", "runner.max_epochs=2"])
    assert (args.config, args.seed, args.cfg_options, args.launcher) == (
        "configs/tiny/retinanet_tiny_synth.py",
        3,
        {"runner.max_epochs": 2},
        "none",
    )


# ----------------------------------------------------------------------------------------------- round trip
def _run(args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_train_save_load_and_test_round_trip(tiny_data, tmp_path, repo_root):
    config = "configs/tiny/retinanet_tiny_synth.py"
    work_dir = tmp_path / "work"
    env = dict(os.environ, MMDET_DATASETS=f"{tiny_data}/", OMP_NUM_THREADS="1")
    options = {
        **_narrow_options(config),
        "runner.max_epochs": 3,
        "checkpoint_config.max_keep_ckpts": 2,
        "data.samples_per_gpu": 2,
        "data.workers_per_gpu": 0,
        "log_config.interval": 1,
        "lr_config.warmup_iters": 2,
    }
    cfg_options = [f"{key}={json.dumps(value).replace(' ', '')}" for key, value in options.items()]
    _run(
        ["tools/train.py", config, "--work-dir", str(work_dir), "--seed", "3", "--cfg-options", *cfg_options],
        repo_root,
        env,
    )

    assert (work_dir / "retinanet_tiny_synth.py").is_file()  # the dumped config
    assert sorted(p.name for p in work_dir.glob("epoch_*.pth")) == ["epoch_2.pth", "epoch_3.pth"]
    records = [json.loads(line) for line in next(work_dir.glob("*.log.json")).read_text().splitlines()]
    train_records = [r for r in records if r["mode"] == "train"]
    per_epoch = max(r["iter"] for r in train_records)  # aspect groups are padded to whole batches
    assert len(train_records) == 3 * per_epoch and all("loss" in r and "lr" in r for r in train_records)
    assert [r["epoch"] for r in records if r["mode"] == "val"] == [1, 2, 3]
    assert "bbox_mAP" in records[-1]
    assert f"Epoch [3][{per_epoch}/{per_epoch}]" in next(work_dir.glob("*[0-9].log")).read_text()

    cfg = load_config(str(repo_root / config), cfg_options=_narrow_options(config))
    model = build_detector(cfg.model)
    checkpoint = load_checkpoint(model, str(work_dir / "latest.pth"))
    assert checkpoint["meta"]["epoch"] == 3 and checkpoint["meta"]["iter"] == 3 * per_epoch
    assert tuple(checkpoint["meta"]["CLASSES"]) == SYNTHETIC_CLASSES
    assert "optimizer" not in checkpoint
    saved = checkpoint["state_dict"]
    assert set(saved) == set(model.state_dict())
    assert all(torch.equal(saved[key], value) for key, value in model.state_dict().items())

    result = _run(
        [
            "tools/test.py",
            config,
            str(work_dir / "latest.pth"),
            "--eval",
            "bbox",
            "--work-dir",
            str(tmp_path / "test"),
            "--cfg-options",
            *cfg_options,
        ],
        repo_root,
        env,
    )
    assert "bbox_mAP" in result.stdout + result.stderr
    assert list((tmp_path / "test").glob("eval_*.json"))

"""Step decay with warm-up, as mmcv's StepLrUpdaterHook computes it."""

import pytest
import torch

from mmdet.apis.lr_schedule import StepLrSchedule, current_lr, set_lr


def zoo_2x(base_lr: float = 0.02) -> StepLrSchedule:
    config = dict(policy="step", warmup="linear", warmup_iters=500, warmup_ratio=0.001, step=[16, 22])
    return StepLrSchedule.from_config(config, base_lr=base_lr)


def test_linear_warmup_formula():
    schedule = zoo_2x()
    assert schedule.lr_at(0, 0) == pytest.approx(0.02 * 0.001)
    for i in (1, 100, 250, 499):
        assert schedule.lr_at(0, i) == pytest.approx(0.02 * (1 - (1 - i / 500) * (1 - 0.001)))
    assert schedule.lr_at(0, 500) == pytest.approx(0.02)
    assert schedule.lr_at(1, 7000) == pytest.approx(0.02)


def test_step_decay_by_epoch():
    schedule = zoo_2x()
    iters = 10_000
    assert schedule.lr_at(15, iters) == pytest.approx(0.02)
    assert schedule.lr_at(16, iters) == pytest.approx(0.002)
    assert schedule.lr_at(21, iters) == pytest.approx(0.002)
    assert schedule.lr_at(22, iters) == pytest.approx(0.0002)
    assert schedule.lr_at(23, iters) == pytest.approx(0.0002)


def test_warmup_scales_the_decayed_lr():
    """A warm-up that outlasts a step multiplies the already decayed lr, as mmcv does."""
    schedule = StepLrSchedule(base_lr=0.1, step=[1], warmup="linear", warmup_iters=100, warmup_ratio=0.5)
    assert schedule.lr_at(1, 50) == pytest.approx(0.01 * (1 - 0.5 * 0.5))


def test_other_warmups_and_int_step():
    exp = StepLrSchedule(base_lr=1.0, warmup="exp", warmup_iters=10, warmup_ratio=0.01)
    assert exp.lr_at(0, 5) == pytest.approx(0.01**0.5)
    constant = StepLrSchedule(base_lr=1.0, warmup="constant", warmup_iters=10, warmup_ratio=0.25)
    assert constant.lr_at(0, 9) == pytest.approx(0.25) and constant.lr_at(0, 10) == pytest.approx(1.0)
    every_three = StepLrSchedule(base_lr=1.0, step=3, gamma=0.5)
    assert [every_three.regular_lr(e) for e in (0, 2, 3, 6, 7)] == pytest.approx([1, 1, 0.5, 0.25, 0.25])
    floored = StepLrSchedule(base_lr=1.0, step=1, min_lr=0.05)
    assert floored.regular_lr(5) == pytest.approx(0.05)


def test_iteration_based_steps():
    schedule = StepLrSchedule.from_config(dict(policy="step", by_epoch=False, step=[100, 200]), base_lr=1.0)
    assert [schedule.lr_at(0, i) for i in (99, 100, 199, 200)] == pytest.approx([1.0, 0.1, 0.1, 0.01])


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(policy="cosine"), "policy"),
        (dict(policy="step", warmup="quadratic", warmup_iters=5), "warmup"),
        (dict(policy="step", warmup="linear", warmup_iters=0), "warmup_iters"),
        (dict(policy="step", warmup_ratio=0.0), "warmup_ratio"),
        (dict(policy="step", step=[10, 5]), "step"),
        (dict(policy="step", steps=[10]), "unknown keys"),
    ],
)
def test_bad_config_is_rejected(config, match):
    with pytest.raises(ValueError, match=match):
        StepLrSchedule.from_config(config, base_lr=0.01)


def test_set_lr_on_every_group():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0)
    set_lr(optimizer, 0.125)
    assert [g["lr"] for g in optimizer.param_groups] == [0.125, 0.125]
    assert current_lr(optimizer) == 0.125

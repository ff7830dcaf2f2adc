"""Each loss against its written formula."""

import math

import pytest
import torch

from mmdet.models.builder import build_loss
from mmdet.models.losses import accuracy, weight_reduce_loss

EPS = torch.finfo(torch.float32).eps


def test_weight_reduce_loss_avg_factor_adds_float32_eps():
    loss = torch.tensor([1.0, 2.0, 3.0])
    weight = torch.tensor([1.0, 0.0, 1.0])
    assert weight_reduce_loss(loss, weight, "mean", avg_factor=2).item() == pytest.approx(4.0 / (2 + EPS))
    assert weight_reduce_loss(loss, weight, "sum").item() == 4.0
    assert weight_reduce_loss(loss, None, "mean").item() == 2.0
    with pytest.raises(ValueError, match="avg_factor"):
        weight_reduce_loss(loss, weight, "sum", avg_factor=2)


def test_l1_loss_sums_coordinates_then_divides_by_avg_factor():
    loss_fn = build_loss(dict(type="L1Loss", loss_weight=2.0))
    pred = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    expected = 2.0 * (1 + 0 + 1 + 2) / (5 + EPS)
    assert loss_fn(pred, target, weight, avg_factor=5).item() == pytest.approx(expected)
    empty = loss_fn(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4))
    assert empty.item() == 0.0 and empty.requires_grad


def test_smooth_l1_loss_formula():
    loss_fn = build_loss(dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0))
    pred = torch.tensor([0.5, 3.0])
    target = torch.zeros(2)
    expected = (0.5 * 0.25 / 1.0 + (3.0 - 0.5)) / 2
    assert loss_fn(pred, target).item() == pytest.approx(expected)


def test_softmax_cross_entropy_with_background_last():
    loss_fn = build_loss(dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 2])  # 2 = background (last column of 3 = 2 classes + 1)
    log_probs = logits.log_softmax(dim=1)
    expected = -(log_probs[0, 0] + log_probs[1, 2]) / (2 + EPS)
    loss = loss_fn(logits, labels, torch.ones(2), avg_factor=2)
    assert loss.item() == pytest.approx(expected.item())


def test_sigmoid_binary_cross_entropy_rpn_labels():
    loss_fn = build_loss(dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0))
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    labels = torch.tensor([0, 1, 1])  # 0 = foreground -> target 1; 1 = background -> target 0
    weights = torch.tensor([1.0, 1.0, 0.0])
    sig = torch.sigmoid(logits[:, 0])
    expected = -(math.log(sig[0]) + math.log(1 - sig[1])) / (2 + EPS)
    assert loss_fn(logits, labels, weights, avg_factor=2).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_formula():
    loss_fn = build_loss(dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 2, 3, 1, 3, 0])  # 3 = background (all-zero one-hot)
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    expected = 0.0
    p = logits.sigmoid()
    for i in range(6):
        for c in range(3):
            t = 1 if labels[i] == c else 0
            p_t = p[i, c] if t else 1 - p[i, c]
            alpha_t = 0.25 if t else 0.75
            expected += weights[i] * -alpha_t * (1 - p_t) ** 2 * math.log(p_t)
    loss = loss_fn(logits, labels, weights, avg_factor=3)
    assert loss.item() == pytest.approx(float(expected) / (3 + EPS), rel=1e-5)


def test_accuracy_percent():
    pred = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert accuracy(pred, torch.tensor([0, 1, 1, 1])).item() == pytest.approx(75.0)


def test_losses_reject_bad_config():
    with pytest.raises(ValueError, match="reduction"):
        build_loss(dict(type="L1Loss", reduction="avg"))
    with pytest.raises(ValueError, match="use_sigmoid"):
        build_loss(dict(type="FocalLoss", use_sigmoid=False))

"""RPNHead and RetinaHead: layers, post-processing, targets, losses, training."""

import math

import numpy as np
import pytest
import torch

from mmdet.models.builder import build_head
from mmdet.models.losses import sigmoid_focal_loss

EPS = torch.finfo(torch.float32).eps
RPN_TRAIN = dict(
    assigner=dict(
        type="MaxIoUAssigner",
        pos_iou_thr=0.7,
        neg_iou_thr=0.3,
        min_pos_iou=0.3,
        match_low_quality=True,
        ignore_iof_thr=-1,
    ),
    sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
    allowed_border=-1,
    pos_weight=-1,
    debug=False,
)
RPN_TEST = dict(nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0)
RETINA_TRAIN = dict(
    assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
    allowed_border=-1,
    pos_weight=-1,
    debug=False,
)
RETINA_TEST = dict(
    nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100
)


def meta(img_shape, pad_shape=None, scale=1.0):
    return dict(
        img_shape=(*img_shape, 3),
        pad_shape=(*(pad_shape or img_shape), 3),
        scale_factor=np.full(4, scale, dtype=np.float32),
    )


def logit(p):
    return math.log(p / (1 - p))


def rpn_head(**kw):
    cfg = dict(type="RPNHead", in_channels=8, feat_channels=16, train_cfg=RPN_TRAIN, test_cfg=RPN_TEST)
    cfg.update(kw)
    return build_head(cfg)


def retina_head(**kw):
    cfg = dict(
        type="RetinaHead",
        num_classes=3,
        in_channels=8,
        stacked_convs=2,
        feat_channels=16,
        train_cfg=RETINA_TRAIN,
        test_cfg=RETINA_TEST,
    )
    cfg.update(kw)
    return build_head(cfg)


def test_full_size_parameter_names_shapes_and_init():
    rpn = build_head(dict(type="RPNHead", in_channels=256, feat_channels=256))
    shapes = {k: tuple(v.shape) for k, v in rpn.state_dict().items()}
    assert shapes == {
        "rpn_conv.weight": (256, 256, 3, 3),
        "rpn_conv.bias": (256,),
        "rpn_cls.weight": (3, 256, 1, 1),
        "rpn_cls.bias": (3,),
        "rpn_reg.weight": (12, 256, 1, 1),
        "rpn_reg.bias": (12,),
    }
    assert abs(rpn.rpn_conv.weight.std().item() - 0.01) < 1e-3 and rpn.rpn_cls.bias.abs().sum() == 0

    retina = build_head(dict(type="RetinaHead", num_classes=80, in_channels=256, stacked_convs=4, feat_channels=256))
    shapes = {k: tuple(v.shape) for k, v in retina.state_dict().items()}
    expected = {}
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            expected[f"{tower}.{i}.conv.weight"] = (256, 256, 3, 3)
            expected[f"{tower}.{i}.conv.bias"] = (256,)
    expected.update(
        {
            "retina_cls.weight": (720, 256, 3, 3),
            "retina_cls.bias": (720,),
            "retina_reg.weight": (36, 256, 3, 3),
            "retina_reg.bias": (36,),
        }
    )
    assert shapes == expected
    torch.testing.assert_close(retina.retina_cls.bias, torch.full((720,), -4.59511985))
    assert retina.cls_convs[0].conv.bias.abs().sum() == 0


def test_rpn_proposals_filter_empty_boxes_and_nms_per_level():
    head = rpn_head(anchor_generator=dict(type="AnchorGenerator", scales=[1], ratios=[1.0], strides=[16, 32]))
    # Level 0: 2x2 anchors of side 16 centred at (0,0), (16,0), (0,16), (16,16);
    # level 1: one anchor of side 32 centred at (0,0).
    scores = [torch.tensor([5.0, 1.0, 2.0, 3.0]).view(1, 1, 2, 2), torch.tensor([4.0]).view(1, 1, 1, 1)]
    deltas0 = torch.zeros(4, 4)
    deltas0[0] = torch.tensor([-3.0, 0, 0, 0])  # moves fully left of the image: width 0 after clipping -> removed
    deltas0[3] = torch.tensor([-0.5, -0.5, 0, 0])  # becomes (0, 0, 16, 16)
    deltas0[2] = torch.tensor([0.5, -0.5, 0, 0])  # also (0, 0, 16, 16): suppressed by the better anchor 3 (same level)
    deltas = [deltas0.t().reshape(1, 4, 2, 2), torch.zeros(1, 4, 1, 1)]
    (proposals,) = head.get_bboxes(scores, deltas, [meta((32, 32))])
    expected_boxes = torch.tensor(
        [
            [0.0, 0, 16, 16],  # level 1 (clipped): kept although identical to the next box
            [0.0, 0, 16, 16],  # level 0 anchor 3
            [8.0, 0, 24, 8],
        ]
    )  # level 0 anchor 1
    torch.testing.assert_close(proposals[:, :4], expected_boxes)
    torch.testing.assert_close(proposals[:, 4], torch.sigmoid(torch.tensor([4.0, 3.0, 1.0])))

    # nms_pre is per level (top 2 of level 0 are anchors 0 and 3); max_per_img truncates the sorted result.
    cfg = dict(RPN_TEST, nms_pre=2, max_per_img=1)
    (proposals,) = head.get_bboxes(scores, deltas, [meta((32, 32))], cfg=cfg)
    torch.testing.assert_close(proposals, torch.tensor([[0.0, 0, 16, 16, torch.sigmoid(torch.tensor(4.0)).item()]]))


def test_retina_threshold_then_topk_over_anchor_class_pairs():
    head = retina_head(
        anchor_generator=dict(
            type="AnchorGenerator", octave_base_scale=1, scales_per_octave=1, ratios=[1.0], strides=[32]
        )
    )
    probs = torch.tensor([[0.9, 0.8, 0.01], [0.7, 0.02, 0.03], [0.04, 0.01, 0.05]])  # (anchor, class)
    logits = probs.clone().apply_(logit).reshape(1, 3, 3).permute(0, 2, 1).reshape(1, 3, 1, 3)
    deltas = torch.zeros(1, 4, 1, 3)
    img_meta = meta((64, 96), scale=2.0)

    ((dets, labels),) = head.get_bboxes([logits], [deltas], [img_meta], cfg=dict(RETINA_TEST, nms_pre=2))
    # Top-2 pairs are both anchor 0 (classes 0 and 1), not the top-2 anchors.
    assert labels.tolist() == [0, 1]
    torch.testing.assert_close(dets[:, :4], torch.tensor([[0.0, 0, 16, 16]] * 2))

    ((dets, labels),) = head.get_bboxes([logits], [deltas], [img_meta], rescale=True)
    assert labels.tolist() == [0, 1, 0]  # 0.05 is not > 0.05
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.8, 0.7]))
    torch.testing.assert_close(dets[2, :4], torch.tensor([16.0, 0, 48, 16]) / 2)  # divided by scale_factor


def reference_retina_detections(head, cls_scores, bbox_preds, img_meta, cfg):
    """RetinaHead's test-time post-processing written plainly: flatten (anchor, class) pairs, threshold, sort, top-k,
    decode, batched NMS."""
    from mmdet.core import batched_nms

    anchors = head.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores])
    all_scores, all_labels, all_boxes = [], [], []
    for cls_score, bbox_pred, level_anchors in zip(cls_scores, bbox_preds, anchors):
        scores = cls_score[0].permute(1, 2, 0).reshape(-1, head.num_classes).sigmoid()
        deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, 4)
        pairs = torch.nonzero(scores > cfg["score_thr"])
        pair_scores, order = scores[scores > cfg["score_thr"]].sort(descending=True)
        pairs = pairs[order[: cfg["nms_pre"]]]
        all_scores.append(pair_scores[: cfg["nms_pre"]])
        all_labels.append(pairs[:, 1])
        all_boxes.append(
            head.bbox_coder.decode(level_anchors[pairs[:, 0]], deltas[pairs[:, 0]], max_shape=img_meta["img_shape"])
        )
    scores, labels, boxes = torch.cat(all_scores), torch.cat(all_labels), torch.cat(all_boxes)
    dets, keep = batched_nms(boxes, scores, labels, cfg["nms"])
    return dets[: cfg["max_per_img"]], labels[keep][: cfg["max_per_img"]]


def test_retina_detections_match_the_plain_procedure():
    head = retina_head(
        anchor_generator=dict(
            type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0], strides=[8, 16]
        )
    )
    cls_scores = [torch.randn(1, 27, 12, 10) * 2 - 2, torch.randn(1, 27, 6, 5) * 2 - 2]
    bbox_preds = [torch.randn(1, 36, 12, 10) * 0.3, torch.randn(1, 36, 6, 5) * 0.3]
    cfg = dict(RETINA_TEST, nms_pre=150, max_per_img=60)
    img_meta = meta((90, 75))
    ((dets, labels),) = head.get_bboxes(cls_scores, bbox_preds, [img_meta], cfg=cfg)
    ref_dets, ref_labels = reference_retina_detections(head, cls_scores, bbox_preds, img_meta, cfg)
    assert dets.shape[0] == 60
    torch.testing.assert_close(dets, ref_dets)
    assert torch.equal(labels, ref_labels)


def single_level_retina():
    return retina_head(
        anchor_generator=dict(
            type="AnchorGenerator", octave_base_scale=2, scales_per_octave=1, ratios=[1.0], strides=[16]
        )
    )


def test_retina_targets_ignore_invalid_and_avg_factor():
    head = single_level_retina()
    # One anchor per cell: side 32 centred at (16x, 16y). Batch feature map 4 x 6 (64 x 96 input).
    metas = [meta((64, 60), pad_shape=(64, 64)), meta((64, 96))]
    gt_bboxes = [torch.tensor([[4.0, 0.0, 36.0, 32.0]]), torch.zeros(0, 4)]
    gt_labels = [torch.tensor([2]), torch.zeros(0, dtype=torch.long)]
    anchors, valid = head.get_anchors([(4, 6)], metas, "cpu")
    labels, label_weights, bbox_targets, bbox_weights, num_pos, num_neg = head.get_targets(
        anchors, valid, gt_bboxes, metas, [24], None, gt_labels
    )
    labels0, weights0 = labels[0][0].view(4, 6), label_weights[0][0].view(4, 6)
    assert labels0[1, 1] == 2 and weights0[1, 1] == 1  # anchor (0,0,32,32): IoU 0.78 -> positive
    assert weights0[1, 2] == 0 and labels0[1, 2] == 3  # anchor (16,0,48,32): IoU 0.45 -> ignored
    assert bool((weights0[:, 4:] == 0).all())  # columns outside the image's own pad_shape (64 wide)
    assert int(weights0.sum()) == 4 * 4 - 1
    assert int((labels0 == 2).sum()) == 1
    assert bool((label_weights[0][1] == 1).all()) and bool((labels[0][1] == 3).all())
    # Per-image counts floored at 1: image 1 has no positive.
    assert num_pos == 2 and num_neg == 14 + 24
    torch.testing.assert_close(
        bbox_targets[0][0][1 * 6 + 1], head.bbox_coder.encode(torch.tensor([[0.0, 0, 32, 32]]), gt_bboxes[0])[0]
    )

    cls_score = torch.randn(2, 3, 4, 6)
    bbox_pred = torch.randn(2, 4, 4, 6)
    losses = head.loss([cls_score], [bbox_pred], gt_bboxes, gt_labels, metas)
    flat_scores = cls_score.permute(0, 2, 3, 1).reshape(-1, 3)
    expected_cls = sigmoid_focal_loss(
        flat_scores, labels[0].reshape(-1), label_weights[0].reshape(-1), reduction="none"
    ).sum() / (2 + EPS)
    torch.testing.assert_close(losses["loss_cls"][0], expected_cls)
    flat_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4)
    l1 = (flat_pred - bbox_targets[0].reshape(-1, 4)).abs() * bbox_weights[0].reshape(-1, 4)
    expected_bbox = l1.sum() / (2 + EPS)
    torch.testing.assert_close(losses["loss_bbox"][0], expected_bbox)


def test_rpn_targets_labels_sampling_and_loss_names():
    head = rpn_head()
    metas = [meta((64, 64)), meta((64, 64))]
    gt_bboxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.tensor([[10.0, 20.0, 60.0, 50.0]])]
    feats = [torch.randn(2, 8, 64 // s, 64 // s) for s in (4, 8, 16, 32)] + [torch.randn(2, 8, 1, 1)]
    cls_scores, bbox_preds = head(feats)
    featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
    anchors, valid = head.get_anchors(featmap_sizes, metas, "cpu")
    num_per_level = [h * w * 3 for h, w in featmap_sizes]
    torch.manual_seed(3)
    labels, label_weights, _, bbox_weights, num_pos, num_neg = head.get_targets(
        anchors, valid, gt_bboxes, metas, num_per_level
    )
    all_labels = torch.cat([lv.reshape(2, -1) for lv in labels], dim=1)
    all_weights = torch.cat([lv.reshape(2, -1) for lv in label_weights], dim=1)
    for img in range(2):
        sampled = all_weights[img] > 0
        assert int(sampled.sum()) == 256  # 256 samples per image, positives labelled 0, the rest 1
        assert 1 <= int((all_labels[img] == 0).sum()) <= 128
        assert bool((all_labels[img][~sampled] == 1).all())
    assert num_pos + num_neg == 512

    torch.manual_seed(3)
    losses = head.loss(cls_scores, bbox_preds, gt_bboxes, None, metas)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"} and len(losses["loss_rpn_cls"]) == 5
    flat = torch.cat([s.permute(0, 2, 3, 1).reshape(2, -1) for s in cls_scores], dim=1)
    target = (all_labels == 0).float()
    expected = (
        torch.nn.functional.binary_cross_entropy_with_logits(flat, target, reduction="none") * all_weights
    ).sum() / (512 + EPS)
    torch.testing.assert_close(sum(losses["loss_rpn_cls"]), expected)


def total_loss(losses):
    return sum(sum(v) if isinstance(v, list) else v for k, v in losses.items() if "loss" in k)


@pytest.mark.parametrize("kind", ["rpn", "retina"])
def test_sgd_steps_lower_the_loss(kind):
    head = rpn_head() if kind == "rpn" else retina_head()
    strides = (4, 8, 16, 32, 64) if kind == "rpn" else (8, 16, 32, 64, 128)
    feats = [torch.randn(2, 8, max(64 // s, 1), max(64 // s, 1)) for s in strides]
    metas = [meta((64, 64)), meta((64, 64))]
    gt_bboxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.tensor([[10.0, 20.0, 60.0, 50.0], [0, 0, 20, 30]])]
    gt_labels = [torch.tensor([1]), torch.tensor([0, 2])]
    optimizer = torch.optim.SGD(head.parameters(), lr=0.2, momentum=0.9)
    values = []
    for _ in range(5):
        torch.manual_seed(0)  # same RPN sample every step
        loss = total_loss(head.forward_train(feats, metas, gt_bboxes, gt_labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.92 * values[0]


def test_rpn_forward_train_returns_detached_proposals():
    head = rpn_head()
    feats = [torch.randn(1, 8, 64 // s, 64 // s) for s in (4, 8, 16, 32)] + [torch.randn(1, 8, 1, 1)]
    losses, proposals = head.forward_train(
        feats, [meta((64, 64))], [torch.tensor([[8.0, 8.0, 40.0, 40.0]])], proposal_cfg=dict(RPN_TEST, nms_pre=2000)
    )
    assert proposals[0].shape[1] == 5 and not proposals[0].requires_grad
    widths = proposals[0][:, 2] - proposals[0][:, 0]
    heights = proposals[0][:, 3] - proposals[0][:, 1]
    assert bool((widths > 0).all()) and bool((heights > 0).all())
    assert bool((proposals[0][1:, 4] <= proposals[0][:-1, 4]).all())
    with pytest.raises(KeyError, match="nms_pre"):
        head.get_bboxes(*head(feats), [meta((64, 64))], cfg=dict(max_per_img=5))

"""SingleRoIExtractor, Shared2FCBBoxHead and StandardRoIHead training."""

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from mmdet.models.builder import build_head, build_roi_extractor

EPS = torch.finfo(torch.float32).eps
EXTRACTOR = dict(
    type="SingleRoIExtractor",
    roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0),
    out_channels=4,
    featmap_strides=[4, 8, 16, 32],
)
CODER = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2])


def bbox_head_cfg(in_channels=4, num_classes=3, fc_out_channels=32):
    return dict(
        type="Shared2FCBBoxHead",
        in_channels=in_channels,
        fc_out_channels=fc_out_channels,
        roi_feat_size=7,
        num_classes=num_classes,
        bbox_coder=CODER,
        reg_class_agnostic=False,
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type="L1Loss", loss_weight=1.0),
    )


def roi_head(**kw):
    cfg = dict(
        type="StandardRoIHead",
        bbox_roi_extractor=EXTRACTOR,
        bbox_head=bbox_head_cfg(),
        train_cfg=dict(
            assigner=dict(
                type="MaxIoUAssigner",
                pos_iou_thr=0.5,
                neg_iou_thr=0.5,
                min_pos_iou=0.5,
                match_low_quality=False,
                ignore_iof_thr=-1,
            ),
            sampler=dict(type="RandomSampler", num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
            pos_weight=-1,
            debug=False,
        ),
        test_cfg=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100),
    )
    cfg.update(kw)
    return build_head(cfg)


def square_roi(side: float) -> list:
    return [0.0, 10.0, 20.0, 10.0 + side, 20.0 + side]


def test_roi_level_mapping_boundaries():
    extractor = build_roi_extractor(EXTRACTOR)
    just_below_112 = torch.tensor(112.0).nextafter(torch.tensor(0.0)).nextafter(torch.tensor(0.0)).item()
    sides = [10.0, 111.9, just_below_112, 112.0, 223.9, 224.0, 447.9, 448.0, 2000.0]
    rois = torch.tensor([square_roi(s) for s in sides])
    levels = extractor.map_roi_levels(rois, 4)
    # The 1e-6 inside the log sends a scale a hair below 112 to level 1; everything clamps to [0, 3].
    assert levels.tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3]
    # Non-square: scale is sqrt(w * h) = sqrt(56 * 224) = 112.
    assert extractor.map_roi_levels(torch.tensor([[0.0, 0, 0, 56, 224]]), 4).tolist() == [1]


def test_extractor_pools_each_roi_on_its_level_in_original_order():
    extractor = build_roi_extractor(EXTRACTOR)
    feats = [torch.randn(2, 4, 128 // s, 128 // s) for s in (4, 8, 16, 32)]
    rois = torch.tensor(
        [
            square_roi(300.0),
            [1.0, 5, 5, 40, 60],
            square_roi(150.0),
            [0.0, 2.5, 3.5, 9.25, 7.0],
            [1.0, 0, 0, 127, 127],
            [1.0, -20, -30, 480, 470],
        ]
    )
    out = extractor(feats + [torch.randn(2, 4, 2, 2)], rois)
    assert out.shape == (6, 4, 7, 7)
    levels = extractor.map_roi_levels(rois, 4).tolist()
    assert levels == [2, 0, 1, 0, 1, 3]
    for i, level in enumerate(levels):
        stride = (4, 8, 16, 32)[level]
        expected = roi_align(
            feats[level], rois[i : i + 1], (7, 7), spatial_scale=1 / stride, sampling_ratio=0, aligned=True
        )
        torch.testing.assert_close(out[i : i + 1], expected)


def test_extractor_rejects_other_roi_layers():
    with pytest.raises(Exception, match="RoIAlign"):
        build_roi_extractor(dict(EXTRACTOR, roi_layer=dict(type="RoIPool", output_size=7)))


def test_full_size_bbox_head_parameters_and_init():
    head = build_head(bbox_head_cfg(in_channels=256, num_classes=80, fc_out_channels=1024))
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "shared_fcs.0.weight": (1024, 12544),
        "shared_fcs.0.bias": (1024,),
        "shared_fcs.1.weight": (1024, 1024),
        "shared_fcs.1.bias": (1024,),
        "fc_cls.weight": (81, 1024),
        "fc_cls.bias": (81,),
        "fc_reg.weight": (320, 1024),
        "fc_reg.bias": (320,),
    }
    assert abs(head.fc_cls.weight.std().item() - 0.01) < 1e-3
    assert abs(head.fc_reg.weight.std().item() - 0.001) < 1e-4
    bound = (6 / (12544 + 1024)) ** 0.5  # Xavier-uniform
    assert head.shared_fcs[0].weight.abs().max().item() <= bound


def test_bbox_head_post_processing_background_last_clip_and_rescale():
    head = build_head(bbox_head_cfg(num_classes=3))
    rois = torch.tensor([[0.0, 10, 10, 50, 50], [0.0, 60, 60, 100, 100], [0.0, 0, 0, 30, 30]])
    cls_score = torch.tensor(
        [
            [0.0, 5.0, 0.0, 0.0],  # class 1
            [0.0, 0.0, 0.0, 9.0],  # background (last column): no detection
            [4.0, 0.0, 0.0, 0.0],
        ]
    )  # class 0
    bbox_pred = torch.zeros(3, 12)
    bbox_pred[2, 0:4] = torch.tensor([-2.0, -2.0, 0.0, 0.0])  # class 0 deltas move RoI 2 off the top-left corner
    cfg = dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)
    scale = np.array([2.0, 4.0, 2.0, 4.0], dtype=np.float32)
    dets, labels = head.get_bboxes(rois, cls_score, bbox_pred, (80, 90, 3), scale, rescale=True, cfg=cfg)
    probs = torch.softmax(cls_score, dim=1)
    assert labels.tolist() == [1, 0]
    torch.testing.assert_close(dets[:, 4], torch.stack([probs[0, 1], probs[2, 0]]))
    # Decoded with std 0.1: centre 15 - 0.2 * 30 = 9, so x and y span [-6, 24], clipped to [0, 24], then / scale.
    torch.testing.assert_close(dets[1, :4], torch.tensor([0.0, 0.0, 24.0 / 2, 24.0 / 4]))
    torch.testing.assert_close(dets[0, :4], torch.tensor([10.0 / 2, 10.0 / 4, 50.0 / 2, 50.0 / 4]))


def fixed_batch():
    metas = [dict(img_shape=(128, 128, 3), pad_shape=(128, 128, 3), scale_factor=np.ones(4, dtype=np.float32))] * 2
    gt_bboxes = [torch.tensor([[10.0, 10.0, 60.0, 70.0]]), torch.tensor([[30.0, 40.0, 110.0, 100.0], [5, 5, 40, 30]])]
    gt_labels = [torch.tensor([2]), torch.tensor([0, 1])]
    proposals = []
    for gts in gt_bboxes:
        jitter = gts.repeat(20, 1) + torch.randn(20 * gts.size(0), 4) * 4
        random_xy = torch.rand(30, 2) * 90
        random = torch.cat([random_xy, random_xy + 10 + torch.rand(30, 2) * 30], dim=1)
        boxes = torch.cat([jitter, random])
        proposals.append(torch.cat([boxes, torch.rand(boxes.size(0), 1)], dim=1))
    feats = [torch.randn(2, 4, 128 // s, 128 // s) for s in (4, 8, 16, 32, 64)]
    return feats, metas, proposals, gt_bboxes, gt_labels


def test_roi_head_targets_and_loss_avg_factors():
    head = roi_head()
    feats, metas, proposals, gt_bboxes, gt_labels = fixed_batch()
    torch.manual_seed(1)
    losses = head.forward_train(feats, metas, proposals, gt_bboxes, gt_labels)
    assert set(losses) == {"loss_cls", "loss_bbox", "acc"}
    assert 0.0 <= losses["acc"].item() <= 100.0 and not losses["acc"].requires_grad

    # Recompute from the same sample: softmax CE over all samples, L1 of the gt class's deltas / all samples.
    torch.manual_seed(1)
    results = []
    for i in range(2):
        assign = head.bbox_assigner.assign(proposals[i], gt_bboxes[i], None, gt_labels[i])
        results.append(head.bbox_sampler.sample(assign, proposals[i], gt_bboxes[i], gt_labels[i]))
    labels, label_weights, bbox_targets, bbox_weights = head.bbox_head.get_targets(results, head.train_cfg)
    num_pos = sum(r.pos_inds.numel() for r in results)
    num_samples = labels.numel()
    assert num_samples == sum(r.pos_inds.numel() + r.neg_inds.numel() for r in results)
    assert bool((labels[: results[0].pos_inds.numel()] < 3).all())  # positives first within an image
    assert int((labels < 3).sum()) == num_pos and bool((label_weights == 1).all())
    assert results[0].pos_is_gt[0] == 1  # gts are prepended to the proposals

    from mmdet.core import bbox2roi

    rois = bbox2roi([r.bboxes for r in results])
    cls_score, bbox_pred = head.bbox_head(head.bbox_roi_extractor(feats[:4], rois))
    expected_cls = torch.nn.functional.cross_entropy(cls_score, labels, reduction="sum") / (num_samples + EPS)
    torch.testing.assert_close(losses["loss_cls"], expected_cls)
    pos = labels < 3
    pred = bbox_pred.view(-1, 3, 4)[pos, labels[pos]]
    expected_bbox = (pred - bbox_targets[pos]).abs().sum() / (num_samples + EPS)
    torch.testing.assert_close(losses["loss_bbox"], expected_bbox)


def test_bbox_loss_without_positives_keeps_the_graph():
    head = build_head(bbox_head_cfg(num_classes=3))
    cls_score = torch.randn(4, 4, requires_grad=True)
    bbox_pred = torch.randn(4, 12, requires_grad=True)
    losses = head.loss(cls_score, bbox_pred, torch.full((4,), 3), torch.ones(4), torch.zeros(4, 4), torch.zeros(4, 4))
    assert losses["loss_bbox"].item() == 0.0
    losses["loss_bbox"].backward()
    assert bbox_pred.grad is not None


def test_roi_head_sgd_steps_lower_the_loss_and_simple_test():
    head = roi_head()
    feats, metas, proposals, gt_bboxes, gt_labels = fixed_batch()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    values = []
    for _ in range(5):
        torch.manual_seed(0)
        losses = head.forward_train(feats, metas, proposals, gt_bboxes, gt_labels)
        loss = sum(v for k, v in losses.items() if "loss" in k)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.9 * values[0]

    with torch.no_grad():
        results = head.simple_test(feats, proposals, metas, rescale=True)
    assert len(results) == 2 and all(len(r) == 3 for r in results)
    assert all(arr.dtype == np.float32 and arr.shape[1] == 5 for r in results for arr in r)
    empty = head.simple_test(feats, [torch.zeros(0, 5), torch.zeros(0, 5)], metas)
    assert all(arr.shape == (0, 5) for r in empty for arr in r)

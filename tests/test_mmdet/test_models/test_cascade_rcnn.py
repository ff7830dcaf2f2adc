"""Cascade R-CNN: the zoo checkpoint's state-dict layout, stage-by-stage refinement, score averaging over the stages,
training losses per stage, and inference of the COCO and tiny configs."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdet.apis.training.optimizer import build_optimizer, train_step
from mmdet.datasets import build_dataloader, build_dataset
from mmdet.datasets.synthetic import make_synthetic_coco
from mmdet.models import CascadeRCNN, build_detector, build_head
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.utils import load_config

REPO_ROOT = Path(__file__).resolve().parents[3]
COCO_CONFIG = "configs/cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.py"
TINY_CONFIG = "configs/tiny/cascade_rcnn_tiny_synth.py"
STAGE_STDS = [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]
STAGE_IOUS = [0.5, 0.6, 0.7]
HEAD_SHAPES = {
    "shared_fcs.0.weight": (1024, 12544),
    "shared_fcs.0.bias": (1024,),
    "shared_fcs.1.weight": (1024, 1024),
    "shared_fcs.1.bias": (1024,),
    "fc_cls.weight": (81, 1024),
    "fc_cls.bias": (81,),
    "fc_reg.weight": (4, 1024),
    "fc_reg.bias": (4,),
}
OTHER_SHAPES = {
    "backbone.conv1.weight": (64, 3, 7, 7),
    "backbone.layer4.2.conv3.weight": (2048, 512, 1, 1),
    "neck.lateral_convs.0.conv.weight": (256, 256, 1, 1),
    "neck.fpn_convs.3.conv.weight": (256, 256, 3, 3),
    "rpn_head.rpn_conv.weight": (256, 256, 3, 3),
    "rpn_head.rpn_cls.weight": (3, 256, 1, 1),
    "rpn_head.rpn_reg.weight": (12, 256, 1, 1),
}


def _coco_cfg():
    return load_config(str(REPO_ROOT / COCO_CONFIG))


def _narrow(model_cfg):
    """The same detector with a ResNet-18 (base 8), 16-channel FPN and 32-wide box heads: fast, same code paths."""
    cfg = copy.deepcopy(model_cfg)
    cfg.backbone.update(depth=18, base_channels=8, init_cfg=None)
    cfg.neck.update(in_channels=[8, 16, 32, 64], out_channels=16)
    cfg.rpn_head.update(in_channels=16, feat_channels=16)
    cfg.roi_head.bbox_roi_extractor.out_channels = 16
    for head in cfg.roi_head.bbox_head:
        head.update(in_channels=16, fc_out_channels=32)
    return cfg


def _batch(num_images: int = 2, height: int = 128, width: int = 160):
    img = torch.randn(num_images, 3, height, width)
    metas = [
        dict(
            img_shape=(height - 8 * i, width - 16 * i, 3),
            ori_shape=(height // 2, width // 2, 3),
            pad_shape=(height, width, 3),
            scale_factor=np.array([2.0, 2.0, 2.0, 2.0], dtype=np.float32),
            flip=False,
            flip_direction=None,
        )
        for i in range(num_images)
    ]
    gt_bboxes = [torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 120.0, 100.0]]) for _ in range(num_images)]
    gt_labels = [torch.tensor([3, 17]) for _ in range(num_images)]
    return img, metas, gt_bboxes, gt_labels


def _box_head(stds, num_classes=3, agnostic=True):
    return build_head(
        dict(
            type="Shared2FCBBoxHead",
            in_channels=2,
            fc_out_channels=8,
            roi_feat_size=7,
            num_classes=num_classes,
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=list(stds)),
            reg_class_agnostic=agnostic,
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0),
        )
    )


def _moved(box, deltas, stds):
    """A box moved by raw deltas with the coder's formula, written out by hand (no clipping)."""
    x1, y1, x2, y2 = box
    dx, dy, dw, dh = (d * s for d, s in zip(deltas, stds))
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + dx * w, (y1 + y2) / 2 + dy * h
    w, h = w * math.exp(dw), h * math.exp(dh)
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


# ----------------------------------------------------------------------------------------------- structure
def test_state_dict_matches_the_model_zoo():
    cfg = _coco_cfg()
    with torch.device("meta"):  # structure only: no memory, no initialisation cost
        model = build_detector(cfg.model)
    assert isinstance(model, CascadeRCNN) and isinstance(model.roi_head, CascadeRoIHead)
    state = model.state_dict()
    assert len(state) == 364
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 311
    assert sum(p.numel() for p in model.parameters()) == 69_394_766
    assert sum(p.numel() for p in model.backbone.parameters()) == 23_508_032
    for key, shape in OTHER_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    roi_keys = {k: tuple(v.shape) for k, v in state.items() if k.startswith("roi_head.")}
    expected = {f"roi_head.bbox_head.{i}.{k}": shape for i in range(3) for k, shape in HEAD_SHAPES.items()}
    assert roi_keys == expected  # no keys for the RoI extractors
    assert {k.split(".")[0] for k in state} == {"backbone", "neck", "rpn_head", "roi_head"}


def test_config_values_per_stage():
    cfg = _coco_cfg()
    model = build_detector(_narrow(cfg.model))
    roi_head = model.roi_head
    assert roi_head.num_stages == 3 and roi_head.stage_loss_weights == [1.0, 0.5, 0.25]
    assert len(roi_head.bbox_roi_extractor) == 3 and roi_head.num_classes == 80
    assert [head.bbox_coder.stds for head in roi_head.bbox_head] == STAGE_STDS
    assert all(head.reg_class_agnostic and head.loss_bbox.beta == 1.0 for head in roi_head.bbox_head)
    assert [(a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou) for a in roi_head.bbox_assigner] == [
        (iou, iou, iou) for iou in STAGE_IOUS
    ]
    assert all(not a.match_low_quality for a in roi_head.bbox_assigner)
    assert all(s.num == 512 and s.pos_fraction == 0.25 and s.add_gt_as_proposals for s in roi_head.bbox_sampler)
    assert roi_head.test_cfg == cfg.model.test_cfg.rcnn
    # RPN differs from Faster R-CNN's: smooth L1 with beta 1/9, anchors inside the image, 2000 training proposals.
    assert model.rpn_head.loss_bbox.beta == pytest.approx(1 / 9)
    assert model.rpn_head.train_cfg.allowed_border == 0
    assert cfg.model.train_cfg.rpn_proposal.max_per_img == 2000
    assert cfg.optimizer == dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=1e-4)
    assert cfg.lr_config.step == [8, 11] and cfg.runner.max_epochs == 12


def test_stage_count_mismatches_are_errors():
    cfg = _narrow(_coco_cfg().model).roi_head
    with pytest.raises(ValueError, match="bbox_head has 2 entries"):
        build_head(dict(cfg, bbox_head=cfg.bbox_head[:2]))
    with pytest.raises(ValueError, match="stage_loss_weights"):
        build_head(dict(cfg, stage_loss_weights=[1, 0.5]))
    train_cfg = _coco_cfg().model.train_cfg.rcnn
    with pytest.raises(ValueError, match="list of 3"):
        build_head(dict(cfg, train_cfg=train_cfg[0]))
    with pytest.raises(ValueError, match="mask"):
        build_head(dict(cfg, mask_head=dict(type="FCNMaskHead")))


# ----------------------------------------------------------------------------------------------- refinement
def test_regress_by_class_moves_rois_with_the_stage_stds_class_agnostic():
    stds = STAGE_STDS[1]
    head = _box_head(stds)
    rois = torch.tensor([[0.0, 10.0, 20.0, 50.0, 100.0], [1.0, 0.0, 0.0, 40.0, 40.0]])
    deltas = torch.tensor([[1.0, -2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    meta = dict(img_shape=(200, 300, 3))
    refined = head.regress_by_class(rois, torch.tensor([2, 0]), deltas, meta)
    # dx = 0.05 * w, dy = -0.1 * h, w * exp(0.2): centre (32, 52), size 40 e^0.2 x 80.
    expected = torch.tensor([[0.0, *_moved([10, 20, 50, 100], [1, -2, 2, 0], stds)], [1.0, 0.0, 0.0, 40.0, 40.0]])
    torch.testing.assert_close(refined, expected)
    # Class-agnostic: the label does not matter; (N, 4) boxes give (N, 4) boxes.
    torch.testing.assert_close(head.regress_by_class(rois, torch.tensor([0, 1]), deltas, meta), refined)
    torch.testing.assert_close(head.regress_by_class(rois[:, 1:], torch.tensor([0, 1]), deltas, meta), refined[:, 1:])
    # Clipped to img_shape (h, w).
    big = head.regress_by_class(rois[1:], torch.tensor([0]), torch.tensor([[60.0, 60.0, 30.0, 30.0]]), meta)
    assert big.tolist() == [[1.0, 0.0, 0.0, 300.0, 200.0]]


def test_regress_by_class_class_specific_uses_the_label_columns():
    stds = STAGE_STDS[0]
    head = _box_head(stds, num_classes=3, agnostic=False)
    rois = torch.tensor([[0.0, 10.0, 10.0, 30.0, 50.0]] * 2)
    deltas = torch.zeros(2, 12)
    deltas[0, 4:8] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # class 1 of RoI 0
    deltas[1, 8:12] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # class 2 of RoI 1
    refined = head.regress_by_class(rois, torch.tensor([1, 2]), deltas, dict(img_shape=(100, 100, 3)))
    # dx = 0.1 * 20 for RoI 0, dy = 0.1 * 40 for RoI 1.
    torch.testing.assert_close(refined[:, 1:], torch.tensor([[12.0, 10.0, 32.0, 50.0], [10.0, 14.0, 30.0, 54.0]]))


def test_refine_bboxes_moves_each_image_and_drops_the_gt_rois():
    stds = STAGE_STDS[0]
    head = _box_head(stds)
    rois = torch.tensor(
        [
            [0.0, 10.0, 10.0, 50.0, 50.0],  # image 0: a gt box (positive, first)
            [0.0, 12.0, 8.0, 48.0, 60.0],  # image 0: a positive proposal
            [0.0, 70.0, 70.0, 90.0, 100.0],  # image 0: a negative
            [1.0, 5.0, 5.0, 25.0, 45.0],  # image 1: a positive proposal
            [1.0, 0.0, 0.0, 20.0, 20.0],  # image 1: a negative
        ]
    )
    deltas = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0], [0.0, -1.0, 0.0, 1.0], [0.0] * 4, [2.0] * 4])
    pos_is_gts = [torch.tensor([1, 0], dtype=torch.uint8), torch.tensor([0], dtype=torch.uint8)]
    metas = [dict(img_shape=(100, 100, 3)), dict(img_shape=(60, 80, 3))]
    refined = head.refine_bboxes(rois, torch.tensor([3, 0, 1, 2, 2]), deltas, pos_is_gts, metas)
    assert [r.shape for r in refined] == [(2, 4), (2, 4)]
    expected0 = [_moved(rois[i, 1:].tolist(), deltas[i].tolist(), stds) for i in (1, 2)]
    expected0[1] = [min(max(v, 0.0), 100.0) for v in expected0[1]]  # clipped to 100 x 100
    torch.testing.assert_close(refined[0], torch.tensor(expected0))
    expected1 = [rois[3, 1:].tolist(), _moved(rois[4, 1:].tolist(), deltas[4].tolist(), stds)]
    expected1[1] = [min(max(v, 0.0), bound) for v, bound in zip(expected1[1], (80.0, 60.0, 80.0, 60.0))]
    torch.testing.assert_close(refined[1], torch.tensor(expected1))


# ----------------------------------------------------------------------------------------------- test-time cascade
class _StageStub(torch.nn.Module):
    """Stands in for one stage's box head: hand-made logits and deltas, and a record of the RoIs it saw."""

    def __init__(self, logits: torch.Tensor, deltas: torch.Tensor):
        super().__init__()
        self.logits, self.deltas = logits, deltas
        self.seen: list[torch.Tensor] = []

    def forward(self, rois: torch.Tensor):
        self.seen.append(rois.clone())
        return self.logits, self.deltas


def test_scores_are_the_softmax_of_the_mean_logits_and_boxes_come_from_the_last_stage(monkeypatch):
    cfg = _narrow(_coco_cfg().model).roi_head
    for head in cfg.bbox_head:
        head.num_classes = 2
    roi_head = build_head(dict(cfg, train_cfg=None, test_cfg=None))
    proposals = [torch.tensor([[10.0, 10.0, 50.0, 70.0, 0.9], [60.0, 20.0, 100.0, 40.0, 0.8]])]
    metas = [dict(img_shape=(120, 150, 3), scale_factor=np.array([2.0, 2.0, 2.0, 2.0], dtype=np.float32))]
    logits = [
        torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]]),
        torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),
        torch.tensor([[1.0, -1.0, 5.0], [2.0, 0.0, 0.0]]),
    ]
    deltas = [
        torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, -1.0]]),
        torch.tensor([[0.0, 2.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]),
        torch.tensor([[0.0, 0.0, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]),
    ]
    stubs = [_StageStub(c, d) for c, d in zip(logits, deltas)]
    # The extractors pass the RoIs through, so each stub sees the boxes its stage pooled.
    monkeypatch.setattr(roi_head, "_bbox_forward", lambda stage, x, rois: stubs[stage](rois))

    bboxes, scores = roi_head.simple_test_bboxes([], metas, proposals, rcnn_test_cfg=None, rescale=True)
    mean_softmax = sum(F.softmax(c, dim=1) for c in logits) / 3
    torch.testing.assert_close(scores[0], F.softmax(sum(logits) / 3, dim=1))
    assert not torch.allclose(scores[0], mean_softmax)  # averaged logits, not averaged probabilities

    # Stage i + 1 pools stage i's refinement of its own input with stage i's stds; nothing is filtered.
    boxes = [p[:4].tolist() for p in proposals[0]]
    for stage in range(3):
        seen = stubs[stage].seen[0]
        assert seen[:, 0].tolist() == [0.0, 0.0]
        torch.testing.assert_close(seen[:, 1:], torch.tensor(boxes))
        boxes = [_moved(b, d.tolist(), STAGE_STDS[stage]) for b, d in zip(boxes, deltas[stage])]
        boxes = [[min(max(v, 0.0), bound) for v, bound in zip(b, (150.0, 120.0, 150.0, 120.0))] for b in boxes]
    # Final boxes: the third stage's deltas on its input, clipped, then divided by scale_factor; one box per RoI.
    torch.testing.assert_close(bboxes[0], torch.tensor(boxes) / 2)


def test_no_proposals_give_empty_results():
    model = build_detector(_narrow(_coco_cfg().model)).eval()
    img, metas, _, _ = _batch(1)
    with torch.no_grad():
        feats = model.extract_feat(img)
        results = model.roi_head.simple_test(feats, [torch.zeros(0, 5)], metas, rescale=True)
    assert len(results) == 1 and len(results[0]) == 80
    assert all(a.shape == (0, 5) and a.dtype == np.float32 for a in results[0])


def test_coco_config_inference_gives_per_class_arrays():
    torch.manual_seed(0)
    model = build_detector(_coco_cfg().model).eval()
    for head in model.roi_head.bbox_head:  # make class 5 the likely one, so that detections pass score_thr
        head.fc_cls.bias.data[5] = 6.0
    img, metas, _, _ = _batch(1, height=96, width=128)
    with torch.no_grad():
        results = model(img=[img], img_metas=[metas], return_loss=False, rescale=True)
    assert len(results) == 1 and len(results[0]) == 80
    assert all(a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 5 for a in results[0])
    dets = results[0][5]
    assert 0 < len(dets) <= 100 and sum(len(a) for a in results[0]) == len(dets)
    # Rescaled to the original image (48 x 64), scores above score_thr.
    assert (dets[:, :4] >= 0).all() and (dets[:, [0, 2]] <= 64).all() and (dets[:, [1, 3]] <= 48).all()
    assert (dets[:, 4] > 0.05).all()


# ----------------------------------------------------------------------------------------------- training
def _losses(model, batch, seed=0):
    torch.manual_seed(seed)
    img, metas, gt_bboxes, gt_labels = batch
    return model(img, copy.deepcopy(metas), gt_bboxes=gt_bboxes, gt_labels=gt_labels)


def test_training_losses_per_stage_weighted_and_finite():
    torch.manual_seed(0)
    cfg = _narrow(_coco_cfg().model)
    model = build_detector(cfg).train()
    batch = _batch()
    losses = _losses(model, batch)
    stage_keys = {f"s{i}.{name}" for i in range(3) for name in ("loss_cls", "acc", "loss_bbox")}
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"} | stage_keys

    # The same model with unit stage weights: only the losses (not acc) scale, by 1, 0.5 and 0.25.
    unit = build_detector(dict(cfg, roi_head=dict(cfg.roi_head, stage_loss_weights=[1, 1, 1]))).train()
    unit.load_state_dict(model.state_dict())
    unit_losses = _losses(unit, batch)
    for stage, weight in enumerate([1.0, 0.5, 0.25]):
        for name in ("loss_cls", "loss_bbox"):
            key = f"s{stage}.{name}"
            torch.testing.assert_close(losses[key], unit_losses[key] * weight)
        assert losses[f"s{stage}.acc"] == unit_losses[f"s{stage}.acc"]

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):
        outputs = model.train_step(dict(zip(("img", "img_metas", "gt_bboxes", "gt_labels"), batch)))
        assert all(math.isfinite(v) for v in outputs["log_vars"].values()), outputs["log_vars"]
        optimizer.zero_grad()
        outputs["loss"].backward()
        for head in model.roi_head.bbox_head:
            assert head.fc_cls.weight.grad is not None and head.fc_reg.weight.grad is not None
            assert torch.isfinite(head.fc_cls.weight.grad).all()
        optimizer.step()


def test_training_stages_sample_from_the_refined_rois(monkeypatch):
    torch.manual_seed(0)
    model = build_detector(_narrow(_coco_cfg().model)).train()
    roi_head = model.roi_head
    pooled, candidates = [], {1: [], 2: []}
    forward = roi_head._bbox_forward

    def spy_forward(stage, x, rois):
        cls_score, bbox_pred = forward(stage, x, rois)
        pooled.append((rois.detach().clone(), cls_score.detach().clone(), bbox_pred.detach().clone()))
        return cls_score, bbox_pred

    monkeypatch.setattr(roi_head, "_bbox_forward", spy_forward)
    for stage in (1, 2):
        assign = roi_head.bbox_assigner[stage].assign

        def spy_assign(bboxes, *args, _assign=assign, _stage=stage, **kwargs):
            candidates[_stage].append(bboxes.clone())
            return _assign(bboxes, *args, **kwargs)

        monkeypatch.setattr(roi_head.bbox_assigner[stage], "assign", spy_assign)
    img, metas, gt_bboxes, gt_labels = _batch()
    model(img, metas, gt_bboxes=gt_bboxes, gt_labels=gt_labels)
    assert len(pooled) == 3
    for stage in (1, 2):
        rois, _, bbox_pred = pooled[stage - 1]
        num_gts = [len(g) for g in gt_bboxes]
        for i in range(len(metas)):
            mine = rois[:, 0] == i
            # Sampled RoIs of the previous stage, gts (prepended, all positive) dropped, moved by its deltas.
            expected = roi_head.bbox_head[stage - 1].regress_by_class(
                rois[mine, 1:], torch.zeros(int(mine.sum()), dtype=torch.long), bbox_pred[mine], metas[i]
            )[num_gts[i] :]
            torch.testing.assert_close(candidates[stage][i], expected)


def test_tiny_config_trains_a_few_steps_on_synthetic_data(tmp_path):
    root = tmp_path / "synthetic_coco"
    make_synthetic_coco(root, num_train=2, num_val=1, seed=1)
    cfg = load_config(str(REPO_ROOT / TINY_CONFIG))
    assert cfg.model.type == "CascadeRCNN" and len(cfg.model.roi_head.bbox_head) == 3
    train = cfg.data.train
    train.ann_file = train.ann_file.replace(cfg.data_root, f"{root}/")
    train.img_prefix = train.img_prefix.replace(cfg.data_root, f"{root}/")
    train.pipeline[2].img_scale = (192, 128)
    torch.manual_seed(0)
    model = build_detector(cfg.model).train()
    batch = next(iter(build_dataloader(build_dataset(train), samples_per_gpu=2, workers_per_gpu=0, seed=0)))
    optimizer = build_optimizer(model, cfg.optimizer)
    for _ in range(2):
        outputs = train_step(model, batch, optimizer, grad_clip=dict(cfg.optimizer_config.grad_clip))
        assert math.isfinite(outputs["loss"])
    model.eval()
    with torch.no_grad():
        results = model(img=[batch["img"][:1]], img_metas=[batch["img_metas"][:1]], return_loss=False, rescale=True)
    assert len(results[0]) == 6

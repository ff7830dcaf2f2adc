"""bbox_overlaps, MaxIoUAssigner and the samplers against hand-worked cases."""

import pytest
import torch

from mmdet.core import MaxIoUAssigner, PseudoSampler, RandomSampler, bbox_overlaps, build_assigner, build_sampler
from mmdet.core.bbox import AssignResult


def test_iou_and_iof_hand_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    torch.testing.assert_close(bbox_overlaps(a, b), torch.tensor([[25 / 175, 0.0, 1.0]]))
    torch.testing.assert_close(bbox_overlaps(a, b, mode="iof"), torch.tensor([[0.25, 0.0, 1.0]]))
    torch.testing.assert_close(bbox_overlaps(b, b, is_aligned=True), torch.ones(3))
    # Degenerate boxes: the union is floored at 1e-6 instead of dividing by zero.
    point = torch.tensor([[3.0, 3.0, 3.0, 3.0]])
    assert bbox_overlaps(point, point).item() == 0.0
    assert bbox_overlaps(a, torch.zeros(0, 4)).shape == (1, 0)
    # A fifth column (a proposal score) is ignored.
    torch.testing.assert_close(bbox_overlaps(a, torch.tensor([[5.0, 5.0, 15.0, 15.0, 0.9]])), torch.tensor([[1 / 7]]))
    with pytest.raises(ValueError, match="mode"):
        bbox_overlaps(a, a, mode="giou")


def rpn_assigner():
    return build_assigner(
        dict(
            type="MaxIoUAssigner",
            pos_iou_thr=0.7,
            neg_iou_thr=0.3,
            min_pos_iou=0.3,
            match_low_quality=True,
            ignore_iof_thr=-1,
        )
    )


def test_assigner_positive_ignore_negative_and_low_quality_ties():
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    candidates = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0: positive
            [0.0, 0.0, 10.0, 20.0],  # IoU 0.5 with gt 0: between thresholds, and not gt 0's best: ignored
            [50.0, 50.0, 60.0, 60.0],  # IoU 0: negative
            [20.0, 0.0, 30.0, 5.0],  # IoU 0.5 with gt 1: gt 1's best, tied with the next one
            [20.0, 0.0, 25.0, 10.0],  # IoU 0.5 with gt 1: tie, also assigned (gt_max_assign_all)
        ]
    )
    result = rpn_assigner().assign(candidates, gts, gt_labels=torch.tensor([7, 3]))
    assert result.gt_inds.tolist() == [1, -1, 0, 2, 2]
    assert result.labels.tolist() == [7, -1, -1, 3, 3]
    torch.testing.assert_close(result.max_overlaps, torch.tensor([1.0, 0.5, 0.0, 0.5, 0.5]))
    assert result.num_gts == 2


def test_low_quality_matches_overwrite_in_gt_order():
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 4.0, 10.0, 16.0]])
    candidates = torch.tensor([[0.0, 0.0, 10.0, 12.0], [40.0, 40.0, 50.0, 50.0]])
    # Candidate 0: IoU 0.833 with gt 0 (positive for gt 0) but it is also gt 1's best (IoU 0.5 >= 0.3):
    # the later gt overwrites the earlier assignment.
    result = rpn_assigner().assign(candidates, gts)
    assert result.gt_inds.tolist() == [2, 0]

    # Without low-quality matching it stays with gt 0.
    plain = MaxIoUAssigner(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, match_low_quality=False)
    assert plain.assign(candidates, gts).gt_inds.tolist() == [1, 0]

    # Two gts with the same best candidate at equal IoU: the last gt wins.
    gts = torch.tensor([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 20.0, 10.0]])
    result = rpn_assigner().assign(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), gts)
    assert result.gt_inds.tolist() == [2]


def test_assigner_without_gts_and_min_pos_iou_zero_edge_case():
    candidates = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 9.0, 9.0]])
    result = rpn_assigner().assign(candidates, torch.zeros(0, 4), gt_labels=torch.zeros(0, dtype=torch.long))
    assert result.gt_inds.tolist() == [0, 0]
    assert result.labels.tolist() == [-1, -1]

    # RetinaNet's min_pos_iou=0: a zero-area gt claims every candidate it has IoU 0 with.
    retina = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0)
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 100.0, 100.0]])
    assert retina.assign(candidates, gts).gt_inds.tolist() == [2, 2]


def test_ignore_iof_threshold_marks_candidates_ignored():
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, ignore_iof_thr=0.5, match_low_quality=False)
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    candidates = torch.tensor([[50.0, 50.0, 60.0, 60.0], [80.0, 80.0, 90.0, 90.0]])
    ignore = torch.tensor([[48.0, 48.0, 70.0, 70.0]])
    assert assigner.assign(candidates, gts, gt_bboxes_ignore=ignore).gt_inds.tolist() == [-1, 0]


def make_assign_result(num_pos: int, num_neg: int, num_ignored: int = 5) -> AssignResult:
    gt_inds = torch.cat(
        [
            torch.ones(num_pos, dtype=torch.long),
            torch.zeros(num_neg, dtype=torch.long),
            torch.full((num_ignored,), -1, dtype=torch.long),
        ]
    )
    perm = torch.randperm(gt_inds.numel())
    return AssignResult(1, gt_inds[perm], torch.rand(gt_inds.numel()), None)


def test_random_sampler_fractions_sorted_unique():
    sampler = build_sampler(
        dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False)
    )
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assign = make_assign_result(300, 1000)
    bboxes = torch.rand(assign.gt_inds.numel(), 4)
    result = sampler.sample(assign, bboxes, gt)
    assert result.pos_inds.numel() == 128 and result.neg_inds.numel() == 128
    for inds, value in ((result.pos_inds, 1), (result.neg_inds, 0)):
        assert torch.equal(inds, inds.unique())  # sorted and de-duplicated
        assert bool((assign.gt_inds[inds] == value).all())
    torch.testing.assert_close(result.bboxes, torch.cat([bboxes[result.pos_inds], bboxes[result.neg_inds]]))

    few = sampler.sample(make_assign_result(10, 1000), torch.rand(1015, 4), gt)
    assert few.pos_inds.numel() == 10 and few.neg_inds.numel() == 246
    bounded = RandomSampler(num=256, pos_fraction=0.5, neg_pos_ub=3, add_gt_as_proposals=False)
    assert bounded.sample(make_assign_result(10, 1000), torch.rand(1015, 4), gt).neg_inds.numel() == 30


def test_random_sampler_is_uniform():
    sampler = RandomSampler(num=4, pos_fraction=0.5, add_gt_as_proposals=False)
    counts = torch.zeros(4)
    gallery = torch.arange(4)
    for _ in range(400):
        counts[sampler.random_choice(gallery, 2)] += 1
    assert bool(((counts / 400 - 0.5).abs() < 0.1).all())


def test_random_sampler_prepends_gts_as_proposals():
    sampler = RandomSampler(num=512, pos_fraction=0.25, add_gt_as_proposals=True)
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False)
    gts = torch.tensor([[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 60.0, 60.0]])
    labels = torch.tensor([4, 1])
    proposals = torch.tensor([[0.0, 0.0, 20.0, 22.0, 0.9], [70.0, 70.0, 80.0, 80.0, 0.5]])
    assign = assigner.assign(proposals, gts, gt_labels=labels)
    result = sampler.sample(assign, proposals, gts, gt_labels=labels)
    assert result.pos_inds.tolist() == [0, 1, 2]  # the two gts (prepended) and proposal 0
    assert result.neg_inds.tolist() == [3]
    assert result.pos_is_gt.tolist() == [1, 1, 0]
    assert result.pos_gt_labels.tolist() == [4, 1, 4]
    torch.testing.assert_close(result.pos_bboxes[:2], gts)
    torch.testing.assert_close(result.pos_gt_bboxes, gts[[0, 1, 0]])


def test_pseudo_sampler_takes_every_assigned_candidate():
    assign = AssignResult(1, torch.tensor([0, 1, -1, 1, 0]), torch.zeros(5), None)
    result = PseudoSampler().sample(assign, torch.rand(5, 4), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert result.pos_inds.tolist() == [1, 3]
    assert result.neg_inds.tolist() == [0, 4]
    assert result.pos_assigned_gt_inds.tolist() == [0, 0]

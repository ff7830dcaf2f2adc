"""batched_nms / multiclass_nms, bbox2roi and bbox2result."""

import numpy as np
import pytest
import torch
from torchvision.ops import nms

from mmdet.core import batched_nms, bbox2result, bbox2roi, multiclass_nms, sorted_topk

NMS = dict(type="nms", iou_threshold=0.5)


def test_batched_nms_keeps_overlapping_boxes_of_different_groups():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 10.0, 10.5]])
    scores = torch.tensor([0.6, 0.9, 0.7])
    dets, keep = batched_nms(boxes, scores, torch.tensor([0, 1, 0]), NMS)
    # Box 1 is alone in group 1; box 2 suppresses box 0 in group 0 (IoU 0.95).
    assert keep.tolist() == [1, 2]
    torch.testing.assert_close(dets, torch.tensor([[1.0, 1.0, 11.0, 11.0, 0.9], [0.0, 0.0, 10.0, 10.5, 0.7]]))
    # Same group: the best box suppresses the others.
    dets, keep = batched_nms(boxes, scores, torch.zeros(3, dtype=torch.long), NMS)
    assert keep.tolist() == [1]
    # class_agnostic ignores the groups.
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 2]), NMS, class_agnostic=True)[1].tolist() == [1]


def test_batched_nms_matches_one_nms_call_on_offset_boxes():
    boxes = torch.rand(300, 4) * 50
    boxes[:, 2:] += boxes[:, :2]
    scores = torch.rand(300)
    groups = torch.randint(0, 7, (300,))
    dets, keep = batched_nms(boxes, scores, groups, NMS)
    offset_boxes = boxes + (groups.float() * (boxes.max() + 1))[:, None]
    assert torch.equal(keep, nms(offset_boxes, scores, 0.5))
    assert bool((dets[1:, 4] <= dets[:-1, 4]).all())
    torch.testing.assert_close(dets[:, :4], boxes[keep])  # un-offset boxes are returned


@pytest.mark.parametrize("num_boxes, num_groups", [(3000, 5), (3000, 80)])
def test_large_batched_nms_equals_one_call_on_offset_boxes_including_ties(num_boxes, num_groups):
    xy = torch.rand(num_boxes, 2) * 500
    boxes = torch.cat([xy, xy + 10 + torch.rand(num_boxes, 2) * 150], dim=1)
    scores = (torch.rand(num_boxes) * 10).floor() / 10  # many exactly equal scores
    groups = torch.randint(0, num_groups, (num_boxes,))
    dets, keep = batched_nms(boxes, scores, groups, NMS)
    offset_boxes = boxes + (groups.float() * (boxes.max() + 1))[:, None]
    assert torch.equal(keep, nms(offset_boxes, scores, 0.5))
    torch.testing.assert_close(dets[:, 4], scores[keep])


def test_batched_nms_empty_and_bad_config():
    dets, keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), NMS)
    assert dets.shape == (0, 5) and keep.shape == (0,)
    with pytest.raises(ValueError, match="iou_threshold"):
        batched_nms(torch.rand(2, 4), torch.rand(2), torch.zeros(2, dtype=torch.long), dict(type="soft_nms"))


def test_multiclass_nms_background_last_strict_threshold_roi_major():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.5, 0.0, 10.5, 10.0]])
    # 2 foreground classes + background in the LAST column.
    scores = torch.tensor(
        [
            [0.05, 0.30, 0.65],  # class 0 exactly at the threshold: dropped (strict >)
            [0.60, 0.35, 0.05],
        ]
    )
    dets, labels = multiclass_nms(boxes, scores, 0.05, NMS, max_num=100)
    # Boxes 0 and 1 overlap (IoU 0.9): class 1 keeps only the better of them; class 0 has only box 1.
    assert labels.tolist() == [0, 1]
    torch.testing.assert_close(dets, torch.tensor([[0.5, 0.0, 10.5, 10.0, 0.60], [0.5, 0.0, 10.5, 10.0, 0.35]]))
    # max_num truncates the score-sorted result; return_inds gives the flat RoI-major index n * K + c.
    dets, labels, inds = multiclass_nms(boxes, scores, 0.05, NMS, max_num=1, return_inds=True)
    assert labels.tolist() == [0] and inds.tolist() == [1 * 2 + 0]


def test_multiclass_nms_class_specific_boxes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0, 50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([[0.3, 0.6, 0.1]])
    dets, labels = multiclass_nms(boxes, scores, 0.05, NMS)
    assert labels.tolist() == [1, 0]
    torch.testing.assert_close(dets[:, :4], torch.tensor([[50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]]))
    with pytest.raises(ValueError, match="classes"):
        multiclass_nms(torch.zeros(1, 8), torch.zeros(1, 4), 0.05, NMS)
    dets, labels = multiclass_nms(boxes, torch.tensor([[0.01, 0.01, 0.98]]), 0.05, NMS)
    assert dets.shape == (0, 5) and labels.shape == (0,)


@pytest.mark.parametrize("k", [1, 7, 50, 200, 300])
def test_sorted_topk_is_the_head_of_a_stable_descending_sort(k):
    scores = (torch.rand(300) * 20).floor() / 20  # many ties, also across the k-th value
    values, indices = sorted_topk(scores, k)
    ref_values, ref_indices = scores.sort(descending=True, stable=True)
    assert torch.equal(values, ref_values[:k]) and torch.equal(indices, ref_indices[:k])


def test_bbox2roi_and_bbox2result():
    rois = bbox2roi([torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.9]]), torch.zeros(0, 5), torch.ones(2, 4)])
    assert rois.tolist() == [[0, 1, 2, 3, 4], [2, 1, 1, 1, 1], [2, 1, 1, 1, 1]]

    dets = torch.tensor([[0.0, 0, 1, 1, 0.9], [0, 0, 2, 2, 0.8], [0, 0, 3, 3, 0.7]])
    result = bbox2result(dets, torch.tensor([2, 0, 2]), 3)
    assert len(result) == 3 and all(r.dtype == np.float32 for r in result)
    assert result[1].shape == (0, 5)
    np.testing.assert_array_equal(result[2][:, 4], np.array([0.9, 0.7], dtype=np.float32))  # order kept
    empty = bbox2result(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), 80)
    assert len(empty) == 80 and all(r.shape == (0, 5) for r in empty)

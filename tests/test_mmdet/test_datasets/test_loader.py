"""Collation, samplers and the data-loader factory."""

import numpy as np
import pytest
import torch

from helpers.coco_files import CLASSES, TEST_PIPELINE, TRAIN_PIPELINE, ann, write_tiny_coco
from mmdet.datasets import (
    CocoDataset,
    DistributedGroupSampler,
    DistributedTestSampler,
    GroupSampler,
    build_dataloader,
    collate,
    interleave_shards,
    interleaved_indices,
)
from mmdet.utils import to_device


def _sample(h, w, n_boxes):
    return dict(
        img=torch.ones(3, h, w),
        img_metas=dict(pad_shape=(h, w, 3)),
        gt_bboxes=torch.zeros(n_boxes, 4),
        gt_labels=torch.zeros(n_boxes, dtype=torch.int64),
    )


def test_collate_pads_bottom_right_and_sets_batch_input_shape():
    batch = collate([_sample(32, 64, 2), _sample(64, 32, 0)])
    assert batch["img"].shape == (2, 3, 64, 64)
    assert batch["img"][0, :, :32, :].eq(1).all() and batch["img"][0, :, 32:, :].eq(0).all()
    assert batch["img"][1, :, :, :32].eq(1).all() and batch["img"][1, :, :, 32:].eq(0).all()
    assert [m["batch_input_shape"] for m in batch["img_metas"]] == [(64, 64), (64, 64)]
    assert [m["pad_shape"] for m in batch["img_metas"]] == [(32, 64, 3), (64, 32, 3)]  # per image, unchanged
    assert [len(b) for b in batch["gt_bboxes"]] == [2, 0] and len(batch["gt_labels"]) == 2


def test_to_device_moves_tensors_and_keeps_metas():
    batch = collate([_sample(32, 32, 1)])
    moved = to_device(batch, "cpu")
    assert moved["img_metas"] is batch["img_metas"]
    assert isinstance(moved["gt_bboxes"], list) and torch.is_tensor(moved["gt_bboxes"][0])


class _Flags:
    def __init__(self, flag):
        self.flag = np.array(flag, np.uint8)

    def __len__(self):
        return len(self.flag)


def test_group_sampler_batches_come_from_one_group():
    data = _Flags([0, 1, 1, 0, 1, 1, 1])
    sampler = GroupSampler(data, samples_per_gpu=2, seed=5)
    order = list(sampler)
    assert len(order) == len(sampler) == 8  # group 0: 2, group 1: 5 -> 6
    for i in range(0, len(order), 2):
        assert data.flag[order[i]] == data.flag[order[i + 1]]
    assert set(order) == set(range(7))
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_distributed_group_sampler_splits_whole_batches():
    data = _Flags([0, 1, 1, 0, 1, 1, 1, 0, 0])
    shards = [list(DistributedGroupSampler(data, 2, num_replicas=2, rank=r, seed=1)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(DistributedGroupSampler(data, 2, 2, 0))
    assert set(shards[0]) | set(shards[1]) == set(range(9))
    for shard in shards:
        for i in range(0, len(shard), 2):
            assert data.flag[shard[i]] == data.flag[shard[i + 1]]


def test_distributed_test_sampler_order_and_reinterleaving():
    assert interleaved_indices(5, 2, 0) == [0, 2, 4]
    assert interleaved_indices(5, 2, 1) == [1, 3, 0]  # padded with the first index
    assert interleaved_indices(2, 4, 3) == [1]
    shards = [list(DistributedTestSampler(_Flags([0] * 7), 3, r)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4, 0], [2, 5, 1]]
    assert interleave_shards(shards, 7) == list(range(7))
    with pytest.raises(ValueError, match="differ in length"):
        interleave_shards([[0, 2], [1]], 3)


@pytest.fixture
def tiny_dataset(tmp_path):
    images = [dict(id=i, file_name=f"{i}.png", width=40 + 8 * i, height=48) for i in range(1, 5)]
    anns = [ann(i, i, [2, 2, 10, 10], 7) for i in range(1, 5)]
    write_tiny_coco(tmp_path, images, anns)
    return tmp_path


@pytest.mark.parametrize("workers", [0, 1])
def test_build_dataloader_train_batches(tiny_dataset, workers):
    ds = CocoDataset(
        str(tiny_dataset / "ann.json"), TRAIN_PIPELINE, classes=CLASSES, img_prefix=str(tiny_dataset / "imgs")
    )
    loader = build_dataloader(ds, samples_per_gpu=2, workers_per_gpu=workers, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 3  # one square image (group 0) + 3 wide ones padded to 4 (group 1)
    for batch in batches:
        assert batch["img"].dtype == torch.float32 and batch["img"].shape[0] == 2
        assert batch["img"].shape[2] % 32 == 0 and batch["img"].shape[3] % 32 == 0
        assert all(labels.dtype == torch.int64 for labels in batch["gt_labels"])


def test_build_dataloader_test_order(tiny_dataset):
    ds = CocoDataset(
        str(tiny_dataset / "ann.json"),
        TEST_PIPELINE,
        classes=CLASSES,
        img_prefix=str(tiny_dataset / "imgs"),
        test_mode=True,
    )
    loader = build_dataloader(ds, samples_per_gpu=1, workers_per_gpu=0, shuffle=False)
    names = [batch["img_metas"][0]["ori_filename"] for batch in loader]
    assert names == ["1.png", "2.png", "3.png", "4.png"]

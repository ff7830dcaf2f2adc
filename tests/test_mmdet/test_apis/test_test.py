"""single_gpu_test / multi_gpu_test (2 gloo processes) give the same results and metrics in dataset order."""

import json
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from helpers.coco_files import CLASSES, TEST_PIPELINE, ann, write_tiny_coco
from mmdet.apis import multi_gpu_test, single_gpu_test
from mmdet.datasets import build_dataloader, build_dataset

NUM_IMAGES = 5  # odd: the second rank gets a padded (repeated) image


class FakeDetector(nn.Module):
    """Returns, for each image, detections derived deterministically from its file name (no weights)."""

    def __init__(self, detections_by_file: dict):
        super().__init__()
        self.detections_by_file = detections_by_file

    def forward(self, img, img_metas, return_loss=True, rescale=False):
        assert not return_loss and rescale and img.shape[0] == len(img_metas)
        return [self.detections_by_file[meta["ori_filename"]] for meta in img_metas]


def _detections(index: int) -> list:
    per_class = [np.zeros((0, 5), np.float32) for _ in CLASSES]
    shift = 4 * index  # worse boxes for later images, so the metrics are not trivially 1
    per_class[index % 3] = np.array([[5 + shift, 5, 45 + shift, 45, 0.9 - 0.1 * index]], np.float32)
    return per_class


def _dataset_cfg(root):
    return dict(
        type="CocoDataset",
        ann_file=str(root / "ann.json"),
        img_prefix=str(root / "imgs"),
        classes=CLASSES,
        pipeline=TEST_PIPELINE,
        test_mode=True,
    )


@pytest.fixture
def dist_root(tmp_path):
    cat_ids = [7, 2, 11]
    images = [dict(id=100 - i, file_name=f"{i}.png", width=64, height=48) for i in range(NUM_IMAGES)]
    anns = [ann(i + 1, 100 - i, [5, 5, 40, 40], cat_ids[i % 3]) for i in range(NUM_IMAGES)]
    write_tiny_coco(tmp_path, images, anns)
    return tmp_path


def _fake_model():
    return FakeDetector({f"{i}.png": _detections(i) for i in range(NUM_IMAGES)})


def _dist_worker(rank: int, world_size: int, port: int, root, out_file):
    import os

    from mmdet.utils import init_dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    init_dist("pytorch", backend="gloo")
    try:
        dataset = build_dataset(_dataset_cfg(root))
        loader = build_dataloader(dataset, samples_per_gpu=1, workers_per_gpu=0, dist=True, shuffle=False)
        results = multi_gpu_test(_fake_model(), loader, show_progress=False)
        if rank == 0:
            order_ok = all(
                all(np.array_equal(a, b) for a, b in zip(result, _detections(i))) for i, result in enumerate(results)
            )
            metrics = dataset.evaluate(results, logger="silent")
            out_file.write_text(json.dumps(dict(metrics=metrics, count=len(results), order_ok=order_ok)))
        else:
            assert results is None
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_single_process_results_in_dataset_order(dist_root):
    dataset = build_dataset(_dataset_cfg(dist_root))
    loader = build_dataloader(dataset, samples_per_gpu=1, workers_per_gpu=0, shuffle=False)
    results = single_gpu_test(_fake_model(), loader, show_progress=False)
    assert len(results) == NUM_IMAGES
    for i, result in enumerate(results):
        assert all(np.array_equal(a, b) for a, b in zip(result, _detections(i)))
    # Without a process group multi_gpu_test is the single-process test.
    assert len(multi_gpu_test(_fake_model(), loader, show_progress=False)) == NUM_IMAGES


def test_two_gloo_processes_match_one_process(dist_root, tmp_path):
    dataset = build_dataset(_dataset_cfg(dist_root))
    loader = build_dataloader(dataset, samples_per_gpu=1, workers_per_gpu=0, shuffle=False)
    expected = dataset.evaluate(single_gpu_test(_fake_model(), loader, show_progress=False), logger="silent")
    assert 0 < expected["bbox_mAP"] < 1

    out_file = tmp_path / "rank0.json"
    mp.spawn(_dist_worker, args=(2, _free_port(), dist_root, out_file), nprocs=2, join=True)
    got = json.loads(out_file.read_text())
    assert got["count"] == NUM_IMAGES and got["order_ok"]
    assert got["metrics"] == dict(expected)

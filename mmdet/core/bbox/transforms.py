"""Conversions between per-image box lists, RoI tensors and per-class result arrays."""

from collections.abc import Sequence

import numpy as np
import torch


def bbox2roi(bbox_list: Sequence[torch.Tensor]) -> torch.Tensor:
    """`[batch_index, x1, y1, x2, y2]` rows for every image's boxes (first 4 columns), images concatenated."""
    rois = []
    for img_id, bboxes in enumerate(bbox_list):
        index_col = bboxes.new_full((bboxes.size(0), 1), img_id)
        rois.append(torch.cat([index_col, bboxes[:, :4]], dim=-1))
    return torch.cat(rois, dim=0)


def bbox2result(bboxes, labels, num_classes: int) -> list[np.ndarray]:
    """Split `(k, 5)` detections into `num_classes` float32 arrays by label, keeping their order."""
    if isinstance(bboxes, torch.Tensor):
        bboxes = bboxes.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    bboxes = np.asarray(bboxes, dtype=np.float32).reshape(-1, 5)
    labels = np.asarray(labels).reshape(-1)
    if bboxes.shape[0] != labels.shape[0]:
        raise ValueError(f"bbox2result: {bboxes.shape[0]} boxes but {labels.shape[0]} labels")
    return [bboxes[labels == c] for c in range(num_classes)]

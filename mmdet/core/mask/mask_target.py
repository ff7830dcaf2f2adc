"""Training targets of a mask head: each positive RoI's gt mask, cut out and resized to the head's output size."""

from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
import torch
from torchvision.ops import roi_align


def _as_tensor_masks(gt_masks, device: torch.device) -> torch.Tensor:
    if isinstance(gt_masks, np.ndarray):
        gt_masks = torch.from_numpy(np.ascontiguousarray(gt_masks))
    if not torch.is_tensor(gt_masks) or gt_masks.dim() != 3:
        raise ValueError(
            "gt_masks of an image must be a (num_gts, H, W) array or tensor, "
            f"got {type(gt_masks).__name__} {tuple(getattr(gt_masks, 'shape', ()))}"
        )
    return gt_masks.to(device)


def mask_target_single(
    pos_proposals: torch.Tensor,
    pos_assigned_gt_inds: torch.Tensor,
    gt_masks,
    mask_size: tuple[int, int],
    binarize: bool = True,
) -> torch.Tensor:
    """Targets `(num_pos, h, w)` float of one image.

    Each proposal is clipped to the mask canvas `[0, W] x [0, H]`, then its gt mask (`gt_masks[gt index]`, a
    `(num_gts, H, W)` 0/1 array or tensor) is pooled to `mask_size` by RoIAlign (spatial scale 1, adaptive
    sampling, average, aligned) and, with `binarize`, thresholded at 0.5.
    """
    num_pos = pos_proposals.size(0)
    if num_pos == 0:
        return pos_proposals.new_zeros((0,) + tuple(mask_size))
    masks = _as_tensor_masks(gt_masks, pos_proposals.device)
    height, width = masks.shape[-2:]
    boxes = pos_proposals[:, :4].detach().float().clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    # The gt index selects the "batch" image of the RoI: every mask is read in place, none is copied per RoI.
    rois = torch.cat([pos_assigned_gt_inds.to(boxes.dtype)[:, None], boxes], dim=1)
    targets = roi_align(
        masks[:, None].to(boxes.dtype), rois, tuple(mask_size), spatial_scale=1.0, sampling_ratio=0, aligned=True
    ).squeeze(1)
    if binarize:
        targets = (targets >= 0.5).float()
    return targets


def mask_target(
    pos_proposals_list: Sequence[torch.Tensor],
    pos_assigned_gt_inds_list: Sequence[torch.Tensor],
    gt_masks_list: Sequence,
    rcnn_train_cfg: Mapping,
) -> torch.Tensor:
    """Mask targets of the positive RoIs of every image, concatenated in image order.

    `rcnn_train_cfg['mask_size']` (an int or (h, w)) is the target size; `soft_mask_target=True` keeps the pooled
    values instead of thresholding them.
    """
    if "mask_size" not in rcnn_train_cfg:
        raise KeyError(f"mask targets: the rcnn train_cfg {dict(rcnn_train_cfg)!r} lacks the key 'mask_size'")
    size: Union[int, Sequence[int]] = rcnn_train_cfg["mask_size"]
    mask_size = (size, size) if isinstance(size, int) else tuple(size)
    binarize = not rcnn_train_cfg.get("soft_mask_target", False)
    targets = [
        mask_target_single(proposals, gt_inds, masks, mask_size, binarize)
        for proposals, gt_inds, masks in zip(pos_proposals_list, pos_assigned_gt_inds_list, gt_masks_list)
    ]
    if not targets:
        raise ValueError("mask targets: no image given")
    return torch.cat(targets, dim=0)

"""Batch a list of pipeline outputs into the dict a detector consumes (INTERFACES.md "Batches")."""

import torch


def collate(samples: list[dict]) -> dict:
    """Pad images bottom/right with 0 to the batch's max height and width and stack them.

    Every meta gets `batch_input_shape = (H, W)` of the stacked tensor (mmdetection sets it inside the
    detector's forward; here the loader does it). `pad_shape` stays per image. Ground-truth tensors and
    any other collected key become lists, one entry per image.
    """
    if not samples:
        raise ValueError("collate got an empty list of samples")
    images = [sample["img"] for sample in samples]
    for image in images:
        if not torch.is_tensor(image) or image.dim() != 3:
            raise ValueError(
                f"collate expects CHW image tensors, got {type(image).__name__} "
                f"with shape {getattr(image, 'shape', None)}"
            )
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch_img = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    for i, image in enumerate(images):
        batch_img[i, :, : image.shape[1], : image.shape[2]] = image

    batch = {"img": batch_img, "img_metas": []}
    for sample in samples:
        meta = dict(sample["img_metas"])
        meta["batch_input_shape"] = (height, width)
        batch["img_metas"].append(meta)
    for key in samples[0]:
        if key in ("img", "img_metas"):
            continue
        if not all(key in sample for sample in samples):
            raise KeyError(f"collate: key '{key}' missing from some samples of the batch")
        batch[key] = [sample[key] for sample in samples]
    return batch

"""Cached inputs and outputs of the unit being reconstructed, for every calibration image of this process.

Per image the cache holds the unit's input in the quantized model, its output in the float model and, when
drop_prob < 1, its input in the float model. It lives on the accelerator (`keep_gpu: True`)
or in host memory (pinned on CUDA, moved one step's batch at a time), in float32 or a 16-bit `cache_dtype`.
"""

from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple, Optional

import torch


class CachedBatch(NamedTuple):
    """Tensors of images that share one shape, on the compute device in float32."""

    quant_input: torch.Tensor
    fp_input: Optional[torch.Tensor]
    fp_output: torch.Tensor


class ReconCache:
    """Calibration batches are stored as they came (images of a batch share their padded shape); a step gathers
    any images and groups them by shape, so images of different sizes are never padded together."""

    def __init__(
        self, device: torch.device, keep_on_device: bool, dtype: torch.dtype = torch.float32, keep_fp_input: bool = True
    ):
        self.device = torch.device(device)
        self.storage_device = self.device if keep_on_device else torch.device("cpu")
        self.pin = not keep_on_device and self.device.type == "cuda"
        self.dtype = dtype
        self.keep_fp_input = keep_fp_input
        self._batches: list[dict[str, torch.Tensor]] = []
        self._index: list[tuple] = []  # image number -> (batch number, row)

    def add(self, quant_input: torch.Tensor, fp_input: torch.Tensor, fp_output: torch.Tensor) -> None:
        entry = {"quant_input": self._store(quant_input), "fp_output": self._store(fp_output)}
        if self.keep_fp_input:
            entry["fp_input"] = self._store(fp_input)
        batch_number = len(self._batches)
        self._batches.append(entry)
        self._index.extend((batch_number, row) for row in range(quant_input.shape[0]))

    def _store(self, tensor: torch.Tensor) -> torch.Tensor:
        stored = tensor.detach().to(self.storage_device, self.dtype)
        return stored.pin_memory() if self.pin else stored

    def __len__(self) -> int:
        return len(self._index)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for batch in self._batches for t in batch.values())

    def gather(self, images: Sequence[int]) -> list[CachedBatch]:
        """The given images, grouped by shape, moved to the compute device as float32."""
        groups: dict[tuple, list[tuple]] = defaultdict(list)
        for image in images:
            batch_number, row = self._index[int(image)]
            shape = tuple(self._batches[batch_number]["quant_input"].shape[1:])
            groups[shape].append((batch_number, row))
        return [self._load(members) for members in groups.values()]

    def _load(self, members: list[tuple]) -> CachedBatch:
        def stack(key: str) -> torch.Tensor:
            rows = [self._batches[b][key][r].to(self.device, non_blocking=self.pin) for b, r in members]
            return torch.stack(rows).float()

        return CachedBatch(stack("quant_input"), stack("fp_input") if self.keep_fp_input else None, stack("fp_output"))

    def all_batches(self, batch_size: int) -> list[list[CachedBatch]]:
        """Every image once, `batch_size` at a time (for measuring the unit's error)."""
        return [
            self.gather(range(start, min(start + batch_size, len(self)))) for start in range(0, len(self), batch_size)
        ]

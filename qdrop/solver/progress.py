"""Reconstruction progress in the work dir, so that a killed run resumes after its last finished unit.

The file holds the quantized model's state after calibration (`next_unit` 0) and after each finished unit, plus a
fingerprint of the run (q_config, seed, world size, config, checkpoint); it is written to a temporary file and renamed,
so it is always either the previous or the new complete state.
"""
import os
from typing import Any, Dict, Optional

import torch
from torch import nn

from mmdet.utils import barrier, get_dist_info
from mmdet.utils.atomic_io import atomic_torch_save
from qdrop.model.checkpoint import load_quantized_state, quantized_state_dict

PROGRESS_FILE = "recon_progress.pth"


class ReconProgress:
    def __init__(self, work_dir: str, fingerprint: Dict[str, Any]):
        self.path = os.path.join(work_dir, PROGRESS_FILE)
        self.fingerprint = fingerprint

    def restore(self, model: nn.Module) -> Optional[int]:
        """Load the saved state into `model` and return the next unit to reconstruct; None when nothing is saved."""
        if not os.path.isfile(self.path):
            return None
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") != self.fingerprint:
            differing = sorted(key for key in set(self.fingerprint) | set(saved.get("fingerprint", {}))
                               if saved.get("fingerprint", {}).get(key) != self.fingerprint.get(key))
            raise ValueError(f"{self.path} holds the progress of another run (it differs in: {', '.join(differing)}); "
                             "use another --work-dir or delete that file to start over")
        load_quantized_state(model, saved["state_dict"])
        return int(saved["next_unit"])

    def save(self, model: nn.Module, next_unit: int, finished_units: list) -> None:
        """Rank 0 writes the state; every rank waits for it."""
        rank, _ = get_dist_info()
        if rank == 0:
            atomic_torch_save({"fingerprint": self.fingerprint, "next_unit": next_unit,
                               "finished_units": list(finished_units),
                               "state_dict": quantized_state_dict(model)}, self.path)
        barrier()

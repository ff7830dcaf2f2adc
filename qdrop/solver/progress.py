"""Reconstruction progress in the work dir, so that a killed run resumes after its last finished unit.

The file holds the quantized model's state after calibration (`next_unit` 0) and after each finished unit, plus the
run's fingerprint: what calibration and reconstruction depend on (the float checkpoint's content, the config's model
and calibration data, the q_config, seed and world size), not the spelling of paths nor the test settings. A rerun
whose fingerprint differs is refused, naming the inputs that changed. The file is written to a temporary file and
renamed, so it is always either the previous or the new complete state.
"""

import hashlib
import json
import os
from typing import Any, Optional

from torch import nn

from mmdet.utils import CheckpointFileError, barrier, get_dist_info, read_checkpoint
from mmdet.utils.atomic_io import atomic_torch_save
from mmdet.utils.errors import UserError
from qdrop.config.q_config import QConfig
from qdrop.model.checkpoint import load_quantized_state, quantized_state_dict

PROGRESS_FILE = "recon_progress.pth"
_HASH_CHUNK_BYTES = 1 << 20
_PATH_KEYS = ("ann_file", "img_prefix", "seg_prefix", "proposal_file", "data_root")
_DROPPED_MODEL_KEYS = ("pretrained", "init_cfg")  # initialisation only: the checkpoint holds every weight
_SHOWN_CHANGES = 5
_FINGERPRINT_NAMES = {
    "checkpoint_sha256": "the float checkpoint's content",
    "model": "the config's model",
    "calibration_data": "the config's calibration data (data.train)",
    "q_config": "the q_config",
    "seed": "--seed",
    "world_size": "the number of processes",
}


class ProgressFileError(UserError, RuntimeError):
    """recon_progress.pth cannot be used: unreadable, or written by a run with other inputs."""


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any, drop: tuple = ()) -> Any:
    """A config subtree as JSON values (dicts, lists, scalars), dataset paths made absolute and resolved."""
    if isinstance(value, dict):
        return {
            str(key): (
                os.path.realpath(item) if key in _PATH_KEYS and isinstance(item, str) and item else _plain(item, drop)
            )
            for key, item in value.items()
            if key not in drop
        }
    if isinstance(value, (list, tuple)):
        return [_plain(item, drop) for item in value]
    return json.loads(json.dumps(value, default=str))


def run_fingerprint(cfg, checkpoint: str, q_config: QConfig, seed: int, world_size: int) -> dict[str, Any]:
    """What calibration and reconstruction depend on, as plain values.

    Args:
        cfg: the mmdetection config (`model`, `data.train`); test and evaluation settings are left out.
        checkpoint: the float checkpoint file (its bytes are hashed once) or URL (kept as it is).
        q_config: the run's q_config.
        seed: the run's seed.
        world_size: the number of processes (it decides each rank's calibration share).

    Returns:
        {'checkpoint_sha256', 'model', 'calibration_data', 'q_config', 'seed', 'world_size'}.
    """
    content = file_sha256(checkpoint) if os.path.isfile(checkpoint) else checkpoint
    return {
        "checkpoint_sha256": content,
        "model": _plain(cfg.model, drop=_DROPPED_MODEL_KEYS),
        "calibration_data": _plain(cfg.data.train),
        "q_config": _plain(q_config.to_dict()),
        "seed": seed,
        "world_size": world_size,
    }


def _changes(saved: Any, now: Any, prefix: str) -> list[str]:
    """'key: saved -> now' for every leaf that differs (dict keys joined with dots, list items by index)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [
            change
            for key in sorted(set(saved) | set(now), key=str)
            for change in _changes(saved.get(key, "<absent>"), now.get(key, "<absent>"), f"{prefix}.{key}")
        ]
    if isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now):
        return [
            change for index, (a, b) in enumerate(zip(saved, now)) for change in _changes(a, b, f"{prefix}.{index}")
        ]
    if saved == now:
        return []
    if isinstance(saved, str) and len(saved) == 64 and isinstance(now, str) and len(now) == 64:
        saved, now = saved[:12] + "...", now[:12] + "..."
    return [f"{prefix}: {saved!r} -> {now!r}"]


def _describe_difference(saved: dict[str, Any], now: dict[str, Any]) -> str:
    parts = []
    for key in now:
        if saved.get(key) == now[key]:
            continue
        changes = _changes(saved.get(key, "<absent>"), now[key], key)
        shown = "; ".join(changes[:_SHOWN_CHANGES]) + (
            f"; and {len(changes) - _SHOWN_CHANGES} more" if len(changes) > _SHOWN_CHANGES else ""
        )
        parts.append(f"{_FINGERPRINT_NAMES.get(key, key)} changed ({shown})")
    return "; ".join(parts)


class ReconProgress:
    """The progress file of one work dir and the fingerprint of the run that uses it.

    Args:
        work_dir: the run's work dir.
        fingerprint: from :func:`run_fingerprint`.
    """

    def __init__(self, work_dir: str, fingerprint: dict[str, Any]):
        self.path = os.path.join(work_dir, PROGRESS_FILE)
        self.fingerprint = fingerprint
        self._saved: Optional[dict[str, Any]] = None

    def _start_over(self) -> str:
        return (
            f"to start over, delete {self.path} (calibration and reconstruction then run again) "
            "or use another --work-dir"
        )

    def check(self) -> Optional[int]:
        """Read the progress file, if any, and check that it belongs to this run.

        Returns:
            The next unit to reconstruct (0: calibrated, no unit done yet), or None when there is no progress file.

        Raises:
            ProgressFileError: the file is empty, truncated or not a progress file, or its run had other inputs;
                the message names the file, what is wrong and how to start over.
        """
        if not os.path.isfile(self.path):
            return None
        try:
            saved = read_checkpoint(self.path, map_location="cpu")
        except (CheckpointFileError, ValueError) as error:
            raise ProgressFileError(f"cannot resume: {error}; {self._start_over()}") from error
        missing = [key for key in ("fingerprint", "next_unit", "state_dict") if key not in saved]
        if missing:
            raise ProgressFileError(
                f"cannot resume: {self.path} is not a reconstruction progress file (it lacks "
                f"{', '.join(missing)}); {self._start_over()}"
            )
        if saved["fingerprint"] != self.fingerprint:
            raise ProgressFileError(
                f"cannot resume: {self.path} holds the progress of a run with other inputs: "
                f"{_describe_difference(saved['fingerprint'], self.fingerprint)}. Its reconstructed units do not "
                f"fit this run; {self._start_over()}"
            )
        self._saved = saved
        return int(saved["next_unit"])

    def restore(self, model: nn.Module) -> Optional[int]:
        """Load the saved state into `model` and return the next unit to reconstruct; None when nothing is saved."""
        next_unit = self.check() if self._saved is None else int(self._saved["next_unit"])
        if next_unit is None:
            return None
        load_quantized_state(model, self._saved["state_dict"])
        self._saved = None
        return next_unit

    def save(self, model: nn.Module, next_unit: int, finished_units: list) -> None:
        """Rank 0 writes the state; every rank waits for it."""
        rank, _ = get_dist_info()
        if rank == 0:
            atomic_torch_save(
                {
                    "fingerprint": self.fingerprint,
                    "next_unit": next_unit,
                    "finished_units": list(finished_units),
                    "state_dict": quantized_state_dict(model),
                },
                self.path,
            )
        barrier()

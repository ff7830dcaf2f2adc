"""Where a run spends its time and memory: wall time per stage and peak memory of the process and the GPU."""

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import torch


class StageTimer:
    """Wall-clock seconds per named stage, in the order the stages first ran; a stage run twice adds up."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last_lap = time.perf_counter()

    def lap(self, name: str) -> None:
        """Charge the time since the previous lap (or since the timer was made) to stage `name`."""
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last_lap
        self._last_lap = now

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def peak_memory_mib(device: Optional[torch.device] = None) -> dict[str, float]:
    """Peak memory so far in MiB: the process's resident set and, on a CUDA device, the largest allocation.

    Args:
        device: the run's device; CUDA devices add a 'cuda max allocated' entry.

    Returns:
        {'host max RSS': MiB[, 'cuda max allocated': MiB]}
    """
    # ru_maxrss is in KiB on Linux and in bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    peaks = {"host max RSS": rss_mib}
    if device is not None and torch.device(device).type == "cuda":
        peaks["cuda max allocated"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks

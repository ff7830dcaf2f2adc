"""Timing shared by the benchmark scripts."""

import time
from collections.abc import Sequence
from typing import Callable

import torch


def time_interleaved(
    runs: dict[str, Callable[[], object]], warmup: int, repeats: int, reduce: Callable[[Sequence[float]], float]
) -> dict[str, float]:
    """Seconds per call of each runner, reduced over `repeats` calls (e.g. min or statistics.median); the runners
    alternate every call so that a change of machine load hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runs.values():
                run()
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: reduce(values) for name, values in times.items()}

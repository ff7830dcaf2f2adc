"""Shared pytest set-up: deterministic, single-threaded-friendly runs on CPU."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _single_thread():
    """One intra-op thread: the test models are tiny, and extra threads only contend with each other and with the
    worker processes that some tests start on a 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed_everything():
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT

"""The device a process computes on."""

import torch


def default_device() -> torch.device:
    """The current CUDA device when CUDA is available (set per rank by `init_dist`), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")

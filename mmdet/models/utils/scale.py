"""Scale: one learnable scalar that multiplies its input (per-level regression scale of the FCOS-family heads)."""

import torch
from torch import nn


class Scale(nn.Module):
    """`x * scale`, with `scale` a 0-dimensional float32 parameter (state-dict shape `[]`, as mmcv's)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

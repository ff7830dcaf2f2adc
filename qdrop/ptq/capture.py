"""Read a unit's input/output off `model.extract_feat` with forward hooks, stopping the forward once it has run."""

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a capture hook: nothing after the captured module needs to run."""


def _run_extract_feat(model: nn.Module, img: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            model.extract_feat(img)
    except StopForward:
        return
    raise RuntimeError("the hooked module did not run during extract_feat")


def capture_input(model: nn.Module, module: nn.Module, img: torch.Tensor) -> torch.Tensor:
    """The input of `module` when `model.extract_feat(img)` reaches it (the module itself does not run)."""
    captured: list[torch.Tensor] = []

    def hook(_module, args):
        captured.append(args[0].detach())
        raise StopForward

    handle = module.register_forward_pre_hook(hook)
    try:
        _run_extract_feat(model, img)
    finally:
        handle.remove()
    return captured[0]


def capture_input_output(model: nn.Module, module: nn.Module, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output of `module` during `model.extract_feat(img)`."""
    captured: list[torch.Tensor] = []

    def hook(_module, args, output):
        captured.extend([args[0].detach(), output.detach()])
        raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        _run_extract_feat(model, img)
    finally:
        handle.remove()
    return captured[0], captured[1]


def forward_order(
    model: nn.Module,
    modules: Sequence[tuple[str, nn.Module]],
    img: torch.Tensor,
) -> list[tuple[str, nn.Module]]:
    """The given modules that `extract_feat` calls, in the order of their first call."""
    order: list[int] = []
    handles = []
    for index, (_, module) in enumerate(modules):

        def hook(_module, _args, index: int = index) -> Optional[torch.Tensor]:
            if index not in order:
                order.append(index)

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model.extract_feat(img)
    finally:
        for handle in handles:
            handle.remove()
    return [modules[index] for index in order]

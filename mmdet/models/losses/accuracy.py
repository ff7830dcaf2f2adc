"""Top-1 classification accuracy in percent (logged by the RoI head, never summed into the loss)."""

import torch


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if pred.size(0) == 0:
        return pred.new_zeros(())
    correct = pred.argmax(dim=1) == target
    return correct.float().sum() * (100.0 / pred.size(0))

"""Fold inference-mode BatchNorm into the preceding Conv2d (mmcv's fuse_conv_bn semantics)."""

import torch
from torch import nn


def _fold_bn_into_conv(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """W' = W * f, b' = (b - mean) * f + beta with f = gamma / sqrt(var + eps), per output channel (in place on
    conv)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fuse {bn}: it tracks no running statistics")
    weight = conv.weight
    with torch.no_grad():
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
        factor = gamma / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_weight = weight * factor.reshape(-1, *([1] * (weight.dim() - 1)))
        new_bias = (bias - bn.running_mean) * factor + beta
    conv.weight = nn.Parameter(new_weight.to(weight.dtype), requires_grad=weight.requires_grad)
    conv.bias = nn.Parameter(new_bias.to(weight.dtype), requires_grad=weight.requires_grad)


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fuse every (Conv2d, BatchNorm) pair of direct siblings, in registration order, replacing the BN by nn.Identity.

    A BN child is fused into the most recent Conv2d child of the same parent, if any; other children are recursed into
    without forgetting that conv. Apply after loading the checkpoint; the model is changed in place and returned.
    """
    last_conv_name = None
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            if last_conv_name is None:
                continue
            _fold_bn_into_conv(getattr(module, last_conv_name), child)
            setattr(module, name, nn.Identity())
            last_conv_name = None
        elif isinstance(child, nn.Conv2d):
            last_conv_name = name
        else:
            fuse_conv_bn(child)
    return module

"""ConvModule: a conv with optional norm and activation, stored as `.conv`, `.bn`/`.gn`, `.activate` (mmcv's names)."""

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import nn

from .norm import build_activation_layer, build_norm_layer, optional_cfg


class ConvModule(nn.Module):
    """Conv2d -> norm -> activation (the order can be changed with ``order``).

    ``bias='auto'`` gives the conv a bias only when there is no norm layer. ``act_cfg=None`` means no activation;
    the default is ReLU as in mmcv. The children's names make state-dict keys such as ``lateral_convs.0.conv.weight``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Sequence[int]],
        stride: Union[int, Sequence[int]] = 1,
        padding: Union[int, Sequence[int]] = 0,
        dilation: Union[int, Sequence[int]] = 1,
        groups: int = 1,
        bias: Union[bool, str] = "auto",
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        act_cfg: Optional[dict] = dict(type="ReLU"),
        inplace: bool = True,
        order: Sequence[str] = ("conv", "norm", "act"),
    ):
        super().__init__()
        if conv_cfg and conv_cfg.get("type", "Conv2d") not in ("Conv", "Conv2d"):
            raise KeyError(f"conv_cfg {conv_cfg} is not supported; only plain Conv2d ('Conv2d') is")
        if sorted(order) != ["act", "conv", "norm"]:
            raise ValueError(f"order must be a permutation of ('conv', 'norm', 'act'), got {order}")
        norm_cfg = optional_cfg(norm_cfg)
        act_cfg = optional_cfg(act_cfg)
        if bias == "auto":
            bias = norm_cfg is None
        self.order = tuple(order)
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.norm_name: Optional[str] = None
        if norm_cfg is not None:
            norm_channels = out_channels if self.order.index("norm") > self.order.index("conv") else in_channels
            self.norm_name, norm = build_norm_layer(norm_cfg, norm_channels)
            self.add_module(self.norm_name, norm)
        self.activate: Optional[nn.Module] = None
        if act_cfg is not None:
            if act_cfg["type"] in ("ReLU", "LeakyReLU"):
                act_cfg.setdefault("inplace", inplace)
            self.activate = build_activation_layer(act_cfg)
        self.init_weights()

    @property
    def norm(self) -> Optional[nn.Module]:
        return getattr(self, self.norm_name) if self.norm_name else None

    @property
    def with_norm(self) -> bool:
        return self.norm_name is not None

    @property
    def with_activation(self) -> bool:
        return self.activate is not None

    def init_weights(self) -> None:
        """Kaiming-normal (fan_out) for the conv, bias 0; norm weight 1, bias 0 (owners usually re-initialise)."""
        nonlinearity = "leaky_relu" if isinstance(self.activate, nn.LeakyReLU) else "relu"
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity=nonlinearity)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        norm = self.norm
        if norm is not None and getattr(norm, "weight", None) is not None:
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)

    def forward(self, x: torch.Tensor, activate: bool = True, norm: bool = True) -> torch.Tensor:
        for layer in self.order:
            if layer == "conv":
                x = self.conv(x)
            elif layer == "norm" and norm and self.norm_name is not None:
                x = self.norm(x)
            elif layer == "act" and activate and self.activate is not None:
                x = self.activate(x)
        return x

"""Feature Pyramid Network with mmdetection 2.28's options and parameter names."""

from collections.abc import Sequence
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..builder import MODELS
from ..utils.conv_module import ConvModule

_EXTRA_CONV_SOURCES = ("on_input", "on_lateral", "on_output")


@MODELS.register_module()
class FPN(nn.Module):
    """Lateral 1x1 convs, a cumulative top-down path (nearest upsampling to the finer map's exact size), 3x3 output
    convs, then extra levels: stride-2 max-pooling of the last output (``add_extra_convs=False``) or stride-2 3x3
    convs fed from the last input, lateral or output (``'on_input'``/``'on_lateral'``/``'on_output'``; ``True`` means
    ``'on_input'``). ``end_level`` is inclusive (-1: the last input).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        num_outs: int,
        start_level: int = 0,
        end_level: int = -1,
        add_extra_convs: Union[bool, str] = False,
        relu_before_extra_convs: bool = False,
        no_norm_on_lateral: bool = False,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        act_cfg: Optional[dict] = None,
        upsample_cfg: dict = dict(mode="nearest"),
        init_cfg: Optional[dict] = None,
    ):
        super().__init__()
        in_channels = list(in_channels)
        num_ins = len(in_channels)
        if end_level == -1 or end_level == num_ins - 1:
            backbone_end_level = num_ins
            if num_outs < num_ins - start_level:
                raise ValueError(f"FPN num_outs={num_outs} is below the {num_ins - start_level} used input levels")
        else:
            if not 0 <= end_level < num_ins:
                raise ValueError(f"FPN end_level={end_level} must index in_channels (length {num_ins}) or be -1")
            backbone_end_level = end_level + 1
            if num_outs != end_level - start_level + 1:
                raise ValueError(
                    f"FPN num_outs={num_outs} must equal end_level - start_level + 1 when end_level is set"
                )
        if not 0 <= start_level < backbone_end_level:
            raise ValueError(f"FPN start_level={start_level} must be below the end level {backbone_end_level}")
        if add_extra_convs is True:
            add_extra_convs = "on_input"
        if add_extra_convs not in (False,) + _EXTRA_CONV_SOURCES:
            raise ValueError(
                f"FPN add_extra_convs={add_extra_convs!r}; expected False, True or one of {_EXTRA_CONV_SOURCES}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_ins = num_ins
        self.num_outs = num_outs
        self.start_level = start_level
        self.backbone_end_level = backbone_end_level
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(upsample_cfg)
        self.init_cfg = init_cfg

        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, backbone_end_level):
            self.lateral_convs.append(
                ConvModule(
                    in_channels[i],
                    out_channels,
                    1,
                    conv_cfg=conv_cfg,
                    norm_cfg=None if no_norm_on_lateral else norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False,
                )
            )
            self.fpn_convs.append(
                ConvModule(
                    out_channels,
                    out_channels,
                    3,
                    padding=1,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False,
                )
            )
        num_extra = num_outs - backbone_end_level + start_level
        if add_extra_convs and num_extra > 0:
            for i in range(num_extra):
                from_input = i == 0 and add_extra_convs == "on_input"
                extra_in = in_channels[backbone_end_level - 1] if from_input else out_channels
                self.fpn_convs.append(
                    ConvModule(
                        extra_in,
                        out_channels,
                        3,
                        stride=2,
                        padding=1,
                        conv_cfg=conv_cfg,
                        norm_cfg=norm_cfg,
                        act_cfg=act_cfg,
                        inplace=False,
                    )
                )
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform (gain 1) on every conv, bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _upsample(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if "scale_factor" in self.upsample_cfg:
            return F.interpolate(x, **self.upsample_cfg)
        return F.interpolate(x, size=like.shape[2:], **self.upsample_cfg)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if len(inputs) != self.num_ins:
            raise ValueError(f"FPN expects {self.num_ins} input maps, got {len(inputs)}")
        laterals: list[torch.Tensor] = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._upsample(laterals[i], laterals[i - 1])
        num_used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(num_used)]
        if self.num_outs > num_used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - num_used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {
                    "on_input": inputs[self.backbone_end_level - 1],
                    "on_lateral": laterals[-1],
                    "on_output": outs[-1],
                }[self.add_extra_convs]
                outs.append(self.fpn_convs[num_used](source))
                for i in range(num_used + 1, self.num_outs):
                    prev = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](prev))
        return tuple(outs)

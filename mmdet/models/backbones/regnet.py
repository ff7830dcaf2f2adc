"""RegNetX backbone (mmdetection 2.x names and shapes; stage widths as pycls derives them).

A RegNet is a ResNet-like backbone with a 3x3 stride-2 stem (no max-pool) and four stages of grouped bottleneck
blocks without channel expansion, each stage striding by 2 in its first block. Its widths follow from six numbers
(``w0, wa, wm, group_w, depth, bot_mul``): see :func:`regnet_stages`.
"""

from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from ..builder import MODELS
from ..utils.norm import build_norm_layer
from .resnet import ResLayer, ResNet
from .resnext import ResNeXtBottleneck

# The X-family settings of mmdetection's RegNet (pycls' published models).
REGNETX_ARCHS: dict[str, dict[str, float]] = {
    "regnetx_400mf": dict(w0=24, wa=24.48, wm=2.54, group_w=16, depth=22, bot_mul=1.0),
    "regnetx_800mf": dict(w0=56, wa=35.73, wm=2.28, group_w=16, depth=16, bot_mul=1.0),
    "regnetx_1.6gf": dict(w0=80, wa=34.01, wm=2.25, group_w=24, depth=18, bot_mul=1.0),
    "regnetx_3.2gf": dict(w0=88, wa=26.31, wm=2.25, group_w=48, depth=25, bot_mul=1.0),
    "regnetx_4.0gf": dict(w0=96, wa=38.65, wm=2.43, group_w=40, depth=23, bot_mul=1.0),
    "regnetx_6.4gf": dict(w0=184, wa=60.83, wm=2.07, group_w=56, depth=17, bot_mul=1.0),
    "regnetx_8.0gf": dict(w0=80, wa=49.56, wm=2.88, group_w=120, depth=23, bot_mul=1.0),
    "regnetx_12gf": dict(w0=168, wa=73.36, wm=2.37, group_w=112, depth=19, bot_mul=1.0),
}
ARCH_KEYS = ("w0", "wa", "wm", "group_w", "depth", "bot_mul")
WIDTH_QUANTUM = 8  # block widths are multiples of 8


def regnet_stages(
    w0: float, wa: float, wm: float, group_w: int, depth: int, bot_mul: float = 1.0
) -> list[tuple[int, int, int]]:
    """The stages of a RegNet as ``(width, number of blocks, group width)``, finest first.

    Per block j: continuous width ``w0 + wa * j``, quantised on the log scale of base ``wm`` and to a multiple of 8;
    runs of equal widths form the stages. Each stage's group width is ``min(group_w, bottleneck width)`` and its
    bottleneck width is rounded to a multiple of it. Roundings are half-to-even (numpy's and Python's ``round``),
    which is what makes regnetx_400mf's last stage 384 wide, not 400.
    """
    if not (wa >= 0 and w0 > 0 and wm > 1 and w0 % WIDTH_QUANTUM == 0 and depth >= 1 and bot_mul > 0):
        raise ValueError(
            f"invalid RegNet arch w0={w0}, wa={wa}, wm={wm}, depth={depth}, bot_mul={bot_mul}: need wa >= 0, "
            f"w0 > 0 and a multiple of {WIDTH_QUANTUM}, wm > 1, depth >= 1, bot_mul > 0"
        )
    continuous = np.arange(depth, dtype=np.float64) * wa + w0
    exponents = np.round(np.log(continuous / w0) / np.log(wm))
    block_widths = (np.round(w0 * np.power(wm, exponents) / WIDTH_QUANTUM) * WIDTH_QUANTUM).astype(int).tolist()
    runs: list[list[int]] = []  # [width, count]
    for width in block_widths:
        if runs and runs[-1][0] == width:
            runs[-1][1] += 1
        else:
            runs.append([width, 1])
    stages = []
    for width, count in runs:
        bottleneck = int(width * bot_mul)
        group_width = min(group_w, bottleneck)
        bottleneck = int(round(bottleneck / group_width) * group_width)
        stages.append((int(bottleneck / bot_mul), count, group_width))
    return stages


class RegNetBottleneck(ResNeXtBottleneck):
    """The RegNet block: a ResNeXt (hence ResNet) Bottleneck without channel expansion.

    Built with ``planes = W`` (the stage width), ``groups = W / group_width``, ``base_width = group_width`` and
    ``base_channels = W``, which makes every conv W channels wide and conv2 grouped with ``group_width`` channels
    per group. Children and forward are the Bottleneck's.
    """

    expansion = 1


@MODELS.register_module()
class RegNet(ResNet):
    """RegNetX backbone returning the stages in ``out_indices`` (output strides 4, 8, 16, 32).

    Args:
        arch: one of ``REGNETX_ARCHS`` (e.g. ``'regnetx_3.2gf'``) or a mapping with the keys ``ARCH_KEYS``.
        in_channels: input channels.
        stem_channels: output channels of the stem conv (``conv1``, 3x3, stride 2).
        base_channels: accepted as mmdetection does; it does not change any width.
        strides, dilations: per stage; the first block of a stage carries the stride.
        out_indices, style, frozen_stages, norm_cfg, norm_eval, zero_init_residual, pretrained, init_cfg: as ResNet.
    """

    arch_settings = REGNETX_ARCHS

    def __init__(
        self,
        arch: Union[str, Mapping],
        in_channels: int = 3,
        stem_channels: int = 32,
        base_channels: int = 32,
        strides: Sequence[int] = (2, 2, 2, 2),
        dilations: Sequence[int] = (1, 1, 1, 1),
        out_indices: Sequence[int] = (0, 1, 2, 3),
        style: str = "pytorch",
        frozen_stages: int = -1,
        norm_cfg: dict = dict(type="BN", requires_grad=True),
        norm_eval: bool = True,
        zero_init_residual: bool = True,
        pretrained: Optional[str] = None,
        init_cfg: Optional[dict] = None,
    ):
        # RegNet builds its own stem and stages: ResNet's constructor (depth table, 7x7 stem, max-pool) is skipped.
        nn.Module.__init__(self)
        arch_cfg = self._arch_cfg(arch)
        stages = regnet_stages(**arch_cfg)
        self._setup(
            num_stages=len(stages),
            strides=strides,
            dilations=dilations,
            out_indices=out_indices,
            style=style,
            frozen_stages=frozen_stages,
            norm_cfg=norm_cfg,
            norm_eval=norm_eval,
            zero_init_residual=zero_init_residual,
            pretrained=pretrained,
            init_cfg=init_cfg,
        )
        self.arch = arch if isinstance(arch, str) else dict(arch_cfg)
        self.arch_name = f"RegNet {arch}" if isinstance(arch, str) else f"RegNet {arch_cfg}"
        self.base_channels = base_channels
        self.block = RegNetBottleneck
        self.stage_widths = [width for width, _, _ in stages]
        self.stage_blocks = tuple(count for _, count, _ in stages)
        self.group_widths = [group_width for _, _, group_width in stages]

        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, stride=2, padding=1, bias=False)
        self.add_module(*build_norm_layer(self.norm_cfg, stem_channels, postfix=1))
        self.relu = nn.ReLU(inplace=True)

        inplanes = stem_channels
        for i, (width, count, group_width) in enumerate(stages):
            self._add_stage(
                ResLayer(
                    RegNetBottleneck,
                    inplanes,
                    width,
                    count,
                    strides[i],
                    dilations[i],
                    style,
                    self.norm_cfg,
                    groups=width // group_width,
                    base_width=group_width,
                    base_channels=width,
                )
            )
            inplanes = width
        self.feat_dim = inplanes
        self.out_channels = [self.stage_widths[i] for i in self.out_indices]
        self.init_weights()
        self._freeze_stages()

    @classmethod
    def _arch_cfg(cls, arch: Union[str, Mapping]) -> dict:
        if isinstance(arch, str):
            if arch not in cls.arch_settings:
                raise KeyError(f"unknown RegNet arch {arch!r}; expected one of {sorted(cls.arch_settings)} or a dict")
            return dict(cls.arch_settings[arch])
        if not isinstance(arch, Mapping) or set(arch) != set(ARCH_KEYS):
            raise KeyError(f"RegNet arch {arch!r} must be a name or a dict with exactly the keys {ARCH_KEYS}")
        return dict(arch)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 (3x3, stride 2), bn1, ReLU; no max-pool."""
        return self.relu(self.bn1(self.conv1(x)))

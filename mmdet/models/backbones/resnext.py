"""ResNeXt backbone (mmdetection 2.x names and shapes): ResNet whose Bottleneck has a wider, grouped 3x3 conv."""

import math
from typing import Optional

from torch import nn

from ..builder import MODELS
from .resnet import Bottleneck, ResNet


class ResNeXtBottleneck(Bottleneck):
    """A ResNet :class:`Bottleneck` whose conv1/conv2 have ``width`` channels and whose conv2 has ``groups`` groups.

    ``width = planes`` when ``groups == 1``, else ``floor(planes * base_width / base_channels) * groups``; conv3
    still gives ``planes * expansion`` channels. Children, their order and the forward are the Bottleneck's, so
    everything that handles a Bottleneck (fuse_conv_bn, the quantization tables) handles this block too.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: Optional[nn.Module] = None,
        style: str = "pytorch",
        norm_cfg: dict = dict(type="BN"),
        groups: int = 1,
        base_width: int = 4,
        base_channels: int = 64,
    ):
        width = planes if groups == 1 else math.floor(planes * base_width / base_channels) * groups
        super().__init__(inplanes, planes, stride, dilation, downsample, style, norm_cfg, groups=groups, width=width)
        self.groups = groups
        self.width = width


@MODELS.register_module()
class ResNeXt(ResNet):
    """ResNeXt-50/101/152 (e.g. ``groups=32, base_width=4`` for 32x4d); every other argument is ResNet's.

    Stem, stage strides, output channels (256..2048), downsample branches, frozen stages, norm_eval, style and init
    are ResNet's; only the blocks differ (:class:`ResNeXtBottleneck`).
    """

    arch_settings = {
        50: (ResNeXtBottleneck, (3, 4, 6, 3)),
        101: (ResNeXtBottleneck, (3, 4, 23, 3)),
        152: (ResNeXtBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth: int, groups: int = 1, base_width: int = 4, **kwargs):
        if groups < 1 or base_width < 1:
            raise ValueError(f"ResNeXt groups ({groups}) and base_width ({base_width}) must be positive")
        # Plain attributes, readable by block_kwargs() while ResNet.__init__ builds the stages.
        self.groups = groups
        self.base_width = base_width
        super().__init__(depth, **kwargs)
        self.arch_name = f"ResNeXt-{depth} {groups}x{base_width}d"

    def block_kwargs(self) -> dict:
        return dict(groups=self.groups, base_width=self.base_width, base_channels=self.base_channels)

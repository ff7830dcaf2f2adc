"""ResNet backbone with mmdetection 2.x parameter names (torchvision v1.5 layout: the stride sits on the 3x3 conv).

ResNeXt (resnext.py) and RegNet (regnet.py) build on it: their blocks subclass :class:`Bottleneck` (grouped 3x3 conv,
other inner width) and their stages are :class:`ResLayer` s, so state-dict names, freezing and init are shared.
"""

import logging
import os
from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import nn

from ..builder import MODELS
from ..utils.norm import build_norm_layer

logger = logging.getLogger("mmdet")


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups, bias=False
    )


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs; the first carries the stride. Children: conv1, bn1, conv2, bn2, relu, downsample.

    ``style`` is accepted for a signature shared with Bottleneck; both styles build the same BasicBlock.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: Optional[nn.Module] = None,
        style: str = "pytorch",
        norm_cfg: dict = dict(type="BN"),
    ):
        super().__init__()
        self.stride = stride
        self.dilation = dilation
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.add_module(*build_norm_layer(norm_cfg, planes, postfix=1))
        self.conv2 = _conv3x3(planes, planes)
        self.add_module(*build_norm_layer(norm_cfg, planes, postfix=2))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels). Style 'pytorch' strides the 3x3 conv, 'caffe' the first 1x1.

    Children in order: conv1, bn1, conv2, bn2, conv3, bn3, relu, downsample (the order fuse_conv_bn relies on).
    ``width`` (default ``planes``) is the channel count of conv1's output and conv2; ``groups`` groups conv2.
    ResNet uses the defaults; ResNeXt's and RegNet's blocks are subclasses that set both.
    """

    expansion = 4

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
        width: Optional[int] = None,
    ):
        super().__init__()
        width = planes if width is None else width
        if groups < 1 or width % groups:
            raise ValueError(f"Bottleneck width {width} must be a multiple of groups {groups}")
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"ResNet style must be 'pytorch' or 'caffe', got {style!r}")
        self.stride = stride
        self.dilation = dilation
        conv1_stride, conv2_stride = (1, stride) if style == "pytorch" else (stride, 1)
        self.conv1 = _conv1x1(inplanes, width, conv1_stride)
        self.add_module(*build_norm_layer(norm_cfg, width, postfix=1))
        self.conv2 = _conv3x3(width, width, conv2_stride, dilation, groups)
        self.add_module(*build_norm_layer(norm_cfg, width, postfix=2))
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.add_module(*build_norm_layer(norm_cfg, planes * self.expansion, postfix=3))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


Block = Union[BasicBlock, Bottleneck]


class ResLayer(nn.Sequential):
    """One stage: ``num_blocks`` blocks, the first one striding and (if shapes change) projecting the identity.

    ``block_kwargs`` go to every block's constructor (ResNeXt's groups and widths).
    """

    def __init__(
        self,
        block: type[Block],
        inplanes: int,
        planes: int,
        num_blocks: int,
        stride: int = 1,
        dilation: int = 1,
        style: str = "pytorch",
        norm_cfg: dict = dict(type="BN"),
        **block_kwargs,
    ):
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != out_channels:
            downsample = nn.Sequential(
                _conv1x1(inplanes, out_channels, stride), build_norm_layer(norm_cfg, out_channels)[1]
            )
        blocks = [block(inplanes, planes, stride, dilation, downsample, style, norm_cfg, **block_kwargs)]
        blocks += [
            block(out_channels, planes, 1, dilation, None, style, norm_cfg, **block_kwargs)
            for _ in range(num_blocks - 1)
        ]
        super().__init__(*blocks)


@MODELS.register_module()
class ResNet(nn.Module):
    """ResNet-18/34/50/101/152 returning the feature maps of the stages in ``out_indices`` as a tuple.

    Training-time behaviour as mmdetection: ``frozen_stages=k`` keeps the stem and stages 1..k in eval mode with
    ``requires_grad=False``; ``norm_eval=True`` keeps every BatchNorm in eval mode. Both are re-applied by ``train()``.

    Weights are initialised for training from scratch (Kaiming fan_out, BN 1/0, last BN of each block zeroed when
    ``zero_init_residual``). A ``Pretrained`` ``init_cfg`` (or ``pretrained``) is recorded, not loaded, at construction:
    call :meth:`load_pretrained` to load it (never downloads unless asked).

    Subclasses change the blocks through ``arch_settings`` and :meth:`block_kwargs` (ResNeXt), or build their own
    stem and stages and reuse freezing, init, loading and the forward over ``res_layers`` (RegNet).
    """

    arch_settings = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(
        self,
        depth: int,
        in_channels: int = 3,
        stem_channels: Optional[int] = None,
        base_channels: int = 64,
        num_stages: int = 4,
        strides: Sequence[int] = (1, 2, 2, 2),
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
        super().__init__()
        if depth not in self.arch_settings:
            raise KeyError(
                f"invalid depth {depth} for {type(self).__name__}; expected one of {sorted(self.arch_settings)}"
            )
        self._setup(
            num_stages,
            strides,
            dilations,
            out_indices,
            style,
            frozen_stages,
            norm_cfg,
            norm_eval,
            zero_init_residual,
            pretrained,
            init_cfg,
        )
        self.depth = depth
        self.arch_name = f"{type(self).__name__}-{depth}"
        self.base_channels = base_channels
        block, stage_blocks = self.arch_settings[depth]
        self.block = block
        self.stage_blocks = stage_blocks[:num_stages]
        stem_channels = base_channels if stem_channels is None else stem_channels

        self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
        self.add_module(*build_norm_layer(self.norm_cfg, stem_channels, postfix=1))
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.res_layers: list[str] = []
        inplanes = stem_channels
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**i
            layer = ResLayer(
                block,
                inplanes,
                planes,
                num_blocks,
                strides[i],
                dilations[i],
                style,
                self.norm_cfg,
                **self.block_kwargs(),
            )
            self._add_stage(layer)
            inplanes = planes * block.expansion
        self.feat_dim = inplanes
        self.out_channels = [base_channels * 2**i * block.expansion for i in self.out_indices]
        self.init_weights()
        self._freeze_stages()

    def _setup(
        self,
        num_stages: int,
        strides: Sequence[int],
        dilations: Sequence[int],
        out_indices: Sequence[int],
        style: str,
        frozen_stages: int,
        norm_cfg: dict,
        norm_eval: bool,
        zero_init_residual: bool,
        pretrained: Optional[str],
        init_cfg: Optional[dict],
    ) -> None:
        """Check and record the options every ResNet-like backbone shares (called before any layer is built)."""
        name = type(self).__name__
        if not 1 <= num_stages <= 4:
            raise ValueError(f"{name} num_stages must be 1..4, got {num_stages}")
        if len(strides) < num_stages or len(dilations) < num_stages:
            raise ValueError(f"{name} strides {strides} and dilations {dilations} need {num_stages} entries")
        if not out_indices or max(out_indices) >= num_stages:
            raise ValueError(f"{name} out_indices {out_indices} must index the {num_stages} stages")
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"{name} style must be 'pytorch' or 'caffe', got {style!r}")
        if pretrained is not None and init_cfg is not None:
            raise ValueError(f"give {name} either init_cfg or pretrained, not both")
        if pretrained is not None:
            init_cfg = dict(type="Pretrained", checkpoint=pretrained)
        self.init_cfg = dict(init_cfg) if init_cfg else None
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_cfg = dict(norm_cfg)
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        self.res_layers: list[str] = []

    def block_kwargs(self) -> dict:
        """Extra constructor arguments of every block (none for ResNet; ResNeXt adds groups and widths)."""
        return {}

    def _add_stage(self, layer: ResLayer) -> None:
        """Register the next stage as ``layer{i}`` (the state-dict prefix of the model zoo)."""
        name = f"layer{len(self.res_layers) + 1}"
        self.add_module(name, layer)
        self.res_layers.append(name)

    def init_weights(self) -> None:
        """Initialisation for training from scratch."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_norm.weight)
                    nn.init.zeros_(module.last_norm.bias)

    def load_pretrained(self, allow_download: bool = False) -> bool:
        """Load the ``Pretrained`` checkpoint named by ``init_cfg``; returns whether weights were loaded.

        ``torchvision://resnetXX`` is read from torch hub's cache (downloaded only when ``allow_download``);
        any other value is a local file (a state dict, or a dict with ``state_dict``). ``fc.*`` keys are ignored.
        """
        if not self.init_cfg or self.init_cfg.get("type") != "Pretrained":
            return False
        source = self.init_cfg.get("checkpoint")
        if not isinstance(source, str):
            raise ValueError(f"{type(self).__name__} init_cfg {self.init_cfg} needs a 'checkpoint' string")
        state_dict = _read_pretrained(source, allow_download)
        if state_dict is None:
            logger.warning(
                "%s: pretrained weights %s not available locally; keeping the random init", type(self).__name__, source
            )
            return False
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        result = self.load_state_dict(state_dict, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"pretrained weights {source} do not fit {self.arch_name}: "
                f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
        logger.info("%s: loaded pretrained weights from %s", type(self).__name__, source)
        return True

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.conv1, self.bn1] + [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1, bn1, ReLU, max-pool: the input of the first stage."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.forward_stem(x)
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


def _read_pretrained(source: str, allow_download: bool) -> Optional[dict]:
    if source.startswith("torchvision://"):
        import torchvision.models as tv_models

        arch = source[len("torchvision://") :]
        enum_name = {
            "resnet18": "ResNet18",
            "resnet34": "ResNet34",
            "resnet50": "ResNet50",
            "resnet101": "ResNet101",
            "resnet152": "ResNet152",
        }.get(arch)
        if enum_name is None:
            raise KeyError(f"unknown torchvision checkpoint {source!r}; expected torchvision://resnet18..152")
        weights = getattr(tv_models, f"{enum_name}_Weights").IMAGENET1K_V1
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
        if not os.path.exists(cached) and not allow_download:
            return None
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=False, weights_only=True)
    if source.startswith("open-mmlab://"):
        # mmcv resolves these names through a table of download addresses that is not part of this project.
        if allow_download:
            raise ValueError(
                f"pretrained checkpoint {source!r}: open-mmlab:// names are not resolved here; give a file"
            )
        return None
    if not os.path.isfile(source):
        raise FileNotFoundError(f"pretrained checkpoint {source!r} (ResNet init_cfg) does not exist")
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    return checkpoint.get("state_dict", checkpoint)

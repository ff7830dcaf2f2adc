from .regnet import RegNet, RegNetBottleneck
from .resnet import BasicBlock, Bottleneck, ResLayer, ResNet
from .resnext import ResNeXt, ResNeXtBottleneck

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResLayer",
    "ResNet",
    "ResNeXt",
    "ResNeXtBottleneck",
    "RegNet",
    "RegNetBottleneck",
]

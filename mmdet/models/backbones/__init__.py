from .resnet import BasicBlock, Bottleneck, ResLayer, ResNet

__all__ = ["BasicBlock", "Bottleneck", "ResLayer", "ResNet"]

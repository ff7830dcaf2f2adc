from .conv_module import ConvModule
from .norm import build_activation_layer, build_norm_layer, is_norm
from .scale import Scale

__all__ = ["ConvModule", "build_activation_layer", "build_norm_layer", "is_norm", "Scale"]

"""QDrop quantization core: fake-quant ops, observers, fake quantizers, quantized layers and blocks, state helpers."""

from .builders import ActivationQuantizer, QuantizerConfig, WeightQuantizer
from .fake_quant import AdaRoundFakeQuantize, FakeQuantizeBase, FixedFakeQuantize, LSQFakeQuantize, LSQPlusFakeQuantize
from .layers import (
    WEIGHT_QUANTIZED_TYPES,
    QConv2d,
    QConvTranspose2d,
    QLinear,
    QuantizedBlock,
    QuantizedLayer,
    QuantizedUnit,
    weight_quantized,
)
from .observers import (
    AvgMinMaxObserver,
    AvgMSEFastObserver,
    AvgMSEObserver,
    MinMaxObserver,
    MSEFastObserver,
    MSEObserver,
    ObserverBase,
)
from .state import (
    disable_all,
    enable_calibration,
    enable_quantization,
    fake_quantizers,
    quantizer_kind,
    set_fast_path,
    weight_quantized_layers,
)

__all__ = [
    "MinMaxObserver",
    "AvgMinMaxObserver",
    "MSEObserver",
    "AvgMSEObserver",
    "MSEFastObserver",
    "AvgMSEFastObserver",
    "ObserverBase",
    "FakeQuantizeBase",
    "FixedFakeQuantize",
    "LSQFakeQuantize",
    "LSQPlusFakeQuantize",
    "AdaRoundFakeQuantize",
    "ActivationQuantizer",
    "WeightQuantizer",
    "QuantizerConfig",
    "weight_quantized",
    "QConv2d",
    "QConvTranspose2d",
    "QLinear",
    "WEIGHT_QUANTIZED_TYPES",
    "QuantizedUnit",
    "QuantizedLayer",
    "QuantizedBlock",
    "enable_calibration",
    "enable_quantization",
    "disable_all",
    "fake_quantizers",
    "quantizer_kind",
    "set_fast_path",
    "weight_quantized_layers",
]

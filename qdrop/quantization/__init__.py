"""QDrop quantization core: fake-quant ops, observers, fake quantizers, quantized modules, state helpers."""
from .fake_quant import (AdaRoundFakeQuantize, FakeQuantizeBase, FixedFakeQuantize, LSQFakeQuantize,
                         LSQPlusFakeQuantize)
from .observer import (AvgMinMaxObserver, AvgMSEFastObserver, AvgMSEObserver, MinMaxObserver, MSEFastObserver,
                       MSEObserver, ObserverBase)
from .quantized_module import (ActivationQuantizer, QConv2d, QLinear, QuantizedBlock, QuantizedLayer, Quantizer,
                               WeightQuantizer, check_qconfig)
from .state import disable_all, enable_calibration, enable_quantization, fake_quantizers, is_weight_quantizer

__all__ = [
    'MinMaxObserver', 'AvgMinMaxObserver', 'MSEObserver', 'AvgMSEObserver', 'MSEFastObserver', 'AvgMSEFastObserver',
    'ObserverBase', 'FakeQuantizeBase', 'FixedFakeQuantize', 'LSQFakeQuantize', 'LSQPlusFakeQuantize',
    'AdaRoundFakeQuantize', 'ActivationQuantizer', 'WeightQuantizer', 'Quantizer', 'QConv2d', 'QLinear',
    'QuantizedLayer', 'QuantizedBlock', 'check_qconfig', 'enable_calibration', 'enable_quantization', 'disable_all',
    'fake_quantizers', 'is_weight_quantizer',
]

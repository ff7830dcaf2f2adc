"""Weight-quantized conv/linear modules, quantized layers and the block base class; quantizer builders."""
from typing import Any, Mapping, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from . import fake_quant, observer
from .fake_quant import FakeQuantizeBase

QCONFIG_KEYS = ('quantizer', 'observer', 'bit', 'symmetric', 'ch_axis')
QUANTIZERS = ('FixedFakeQuantize', 'LSQFakeQuantize', 'LSQPlusFakeQuantize', 'AdaRoundFakeQuantize')
OBSERVERS = ('MinMaxObserver', 'AvgMinMaxObserver', 'MSEObserver', 'AvgMSEObserver', 'MSEFastObserver',
             'AvgMSEFastObserver')
BIT_RANGE = (2, 8)


def check_qconfig(cfg: Mapping[str, Any], where: str = 'qconfig') -> None:
    """Raise ValueError naming the key and the allowed values when ``cfg`` is not a valid quantizer config."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f'{where}: expected a mapping with keys {list(QCONFIG_KEYS)}, got {type(cfg).__name__}')
    unknown = sorted(set(cfg) - set(QCONFIG_KEYS))
    if unknown:
        raise ValueError(f'{where}.{unknown[0]}: unknown key; allowed keys: {", ".join(QCONFIG_KEYS)}')
    missing = [k for k in QCONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f'{where}.{missing[0]}: missing key; required keys: {", ".join(QCONFIG_KEYS)}')
    if cfg['quantizer'] not in QUANTIZERS:
        raise ValueError(f'{where}.quantizer: unknown value {cfg["quantizer"]!r}; '
                         f'allowed values: {", ".join(QUANTIZERS)}')
    if cfg['observer'] not in OBSERVERS:
        raise ValueError(f'{where}.observer: unknown value {cfg["observer"]!r}; allowed values: {", ".join(OBSERVERS)}')
    bit = cfg['bit']
    if isinstance(bit, bool) or not isinstance(bit, int) or not BIT_RANGE[0] <= bit <= BIT_RANGE[1]:
        raise ValueError(f'{where}.bit: got {bit!r}; allowed values: integers {BIT_RANGE[0]}..{BIT_RANGE[1]}')
    if not isinstance(cfg['symmetric'], bool):
        raise ValueError(f'{where}.symmetric: got {cfg["symmetric"]!r}; allowed values: true, false')
    ch_axis = cfg['ch_axis']
    if isinstance(ch_axis, bool) or not isinstance(ch_axis, int) or ch_axis < -1:
        raise ValueError(f'{where}.ch_axis: got {ch_axis!r}; allowed values: -1 (per tensor) or a channel axis >= 0')


def _build(cfg: Mapping[str, Any], where: str) -> FakeQuantizeBase:
    check_qconfig(cfg, where)
    quantizer_cls = getattr(fake_quant, cfg['quantizer'])
    observer_cls = getattr(observer, cfg['observer'])
    return quantizer_cls(observer_cls, bit=cfg['bit'], symmetric=cfg['symmetric'], ch_axis=cfg['ch_axis'])


def ActivationQuantizer(cfg: Mapping[str, Any]) -> FakeQuantizeBase:  # noqa: N802 (factory named as in the contract)
    """Activation fake quantizer from a q_config mapping (``a_qconfig``)."""
    return _build(cfg, 'a_qconfig')


def WeightQuantizer(cfg: Mapping[str, Any]) -> FakeQuantizeBase:  # noqa: N802
    """Weight fake quantizer from a q_config mapping (``w_qconfig``)."""
    return _build(cfg, 'w_qconfig')


class QConv2d(nn.Conv2d):
    """nn.Conv2d whose weight passes through ``weight_fake_quant``; keeps ``weight``/``bias`` names."""

    def __init__(self, conv: nn.Conv2d, w_cfg: Mapping[str, Any]):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight = conv.weight
        self.bias = conv.bias
        self.weight_fake_quant = WeightQuantizer(w_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)


class QLinear(nn.Linear):
    """nn.Linear whose weight passes through ``weight_fake_quant``; keeps ``weight``/``bias`` names."""

    def __init__(self, linear: nn.Linear, w_cfg: Mapping[str, Any]):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_fake_quant = WeightQuantizer(w_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_fake_quant(self.weight), self.bias)


def Quantizer(module: nn.Module, w_cfg: Mapping[str, Any]) -> nn.Module:  # noqa: N802
    """The weight-quantized counterpart of an nn.Conv2d or nn.Linear (sharing its parameters)."""
    if isinstance(module, nn.Conv2d):
        return QConv2d(module, w_cfg)
    if isinstance(module, nn.Linear):
        return QLinear(module, w_cfg)
    raise ValueError(f'Quantizer: cannot quantize {type(module).__name__}; allowed types: nn.Conv2d, nn.Linear')


class QuantizedBlock(nn.Module):
    """Base of a reconstruction unit: subclasses compute ``out`` and end with ``self.quantize_output(out)``.

    ``qoutput`` says whether the block's output is fake-quantized by ``block_post_act_fake_quantize``.
    """

    def __init__(self, qoutput: bool = True, a_cfg: Optional[Mapping[str, Any]] = None):
        super().__init__()
        self.qoutput = qoutput
        if qoutput:
            if a_cfg is None:
                raise ValueError('QuantizedBlock: qoutput=True needs an a_qconfig mapping (a_cfg)')
            self.block_post_act_fake_quantize = ActivationQuantizer(a_cfg)

    def quantize_output(self, out: Tensor) -> Tensor:
        return self.block_post_act_fake_quantize(out) if self.qoutput else out


class QuantizedLayer(QuantizedBlock):
    """A weight-quantized conv/linear, an optional activation (e.g. ReLU) and, if ``qoutput``, an output quantizer."""

    def __init__(self, module: nn.Module, activation: Optional[nn.Module], w_cfg: Mapping[str, Any],
                 a_cfg: Optional[Mapping[str, Any]] = None, qoutput: bool = True):
        super().__init__(qoutput, a_cfg)
        self.module = Quantizer(module, w_cfg)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        if self.activation is not None:
            out = self.activation(out)
        return self.quantize_output(out)

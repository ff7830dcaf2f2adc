"""Turn a float detector (BatchNorm folded) into a fake-quantized one, in place.

Backbone and neck are always quantized: every ResNet BasicBlock/Bottleneck becomes one `QuantizedBlock`, every
other conv (the stem, the FPN lateral and output convs) one `QuantizedLayer`. Heads stay full precision unless the
q_config says `quant_head: True`. The first layer's weights keep 8 bits.
"""
from dataclasses import dataclass
from typing import Iterator, List, Mapping, Optional, Tuple

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from mmdet.models.utils.conv_module import ConvModule
from qdrop.model.quantized_modules import QuantizedBasicBlock, QuantizedBlock, QuantizedBottleneck, QuantizedLayer
from qdrop.quantization import WeightQuantizer

FIRST_LAYER_WEIGHT_BITS = 8
# Children whose outputs are final (FPN levels, class scores, box deltas): no output quantizer anywhere below them.
OUTPUT_NOT_QUANTIZED = frozenset({"fpn_convs", "rpn_cls", "rpn_reg", "retina_cls", "retina_reg", "fc_cls", "fc_reg"})
# Layers followed by a functional ReLU in their parent's forward (no nn.ReLU child to find): RPNHead's conv, and
# every fc of ConvFCBBoxHead's shared/cls/reg branches.
RELU_AFTER = frozenset({"rpn_conv"})
RELU_AFTER_EACH_CHILD = frozenset({"shared_fcs", "cls_fcs", "reg_fcs"})
HEAD_NAMES = ("rpn_head", "roi_head", "bbox_head")


@dataclass(frozen=True)
class _WalkContext:
    w_qconfig: Mapping
    a_qconfig: Mapping
    quantize_output: bool
    relu_after_each_child: bool = False


def quantize_detector(model: nn.Module, q_config: Mapping) -> nn.Module:
    """Replace backbone and neck layers (and the heads' with `quant_head: True`) by quantized ones, in place."""
    for key in ("w_qconfig", "a_qconfig"):
        if key not in q_config:
            raise KeyError(f"q_config lacks '{key}' (expected keys: a_qconfig, w_qconfig, calibrate, recon)")
    for part in ("backbone", "neck"):
        if not hasattr(model, part):
            raise ValueError(f"{type(model).__name__} has no '{part}': only detectors with a backbone and a neck "
                             "(extract_feat = backbone + neck) can be quantized")
    context = _WalkContext(q_config["w_qconfig"], q_config["a_qconfig"], quantize_output=True)
    for part in ("backbone", "neck"):
        _quantize_children(getattr(model, part), context)
    if q_config.get("quant_head", False):
        for name in HEAD_NAMES:
            head = getattr(model, name, None)
            if head is not None:
                _quantize_children(head, context)
    _keep_first_layer_8bit(model.backbone)
    return model


def _quantize_children(parent: nn.Module, context: _WalkContext) -> None:
    """Wrap the quantizable children of `parent`, recursing into containers.

    `previous` is the last layer wrapped among `parent`'s direct children, so that an `nn.ReLU` child registered
    right after it (BatchNorm folded to Identity in between) folds into it; a ReLU with no such layer stays as it is.
    """
    previous: Optional[QuantizedLayer] = None
    for name, child in list(parent.named_children()):
        quantize_output = context.quantize_output and name not in OUTPUT_NOT_QUANTIZED
        relu_after = context.relu_after_each_child or name in RELU_AFTER
        if isinstance(child, (QuantizedLayer, QuantizedBlock)):
            raise ValueError(f"{type(parent).__name__}.{name} is already quantized")
        if isinstance(child, (BasicBlock, Bottleneck)):
            block_cls = QuantizedBottleneck if isinstance(child, Bottleneck) else QuantizedBasicBlock
            setattr(parent, name, block_cls(child, context.w_qconfig, context.a_qconfig))
            previous = None
        elif isinstance(child, ConvModule):
            layer = _layer_from_conv_module(child, context, quantize_output, relu_after)
            setattr(parent, name, layer)
            previous = None if layer.relu else layer
        elif isinstance(child, (nn.Conv2d, nn.Linear)):
            layer = QuantizedLayer(child, context.w_qconfig, context.a_qconfig, relu=relu_after,
                                   quantize_output=quantize_output)
            setattr(parent, name, layer)
            previous = None if layer.relu else layer
        elif isinstance(child, nn.ReLU):
            if previous is not None:
                previous.relu = True  # the nn.ReLU stays: applied again to non-negative values it changes nothing
            previous = None
        elif isinstance(child, nn.Identity):
            continue  # a folded BatchNorm between a conv and its ReLU
        elif isinstance(child, _BatchNorm):
            raise ValueError(f"{type(parent).__name__}.{name} is a {type(child).__name__}: fold BatchNorm into the "
                             "convs (mmdet.utils.fuse_conv_bn / --fuse-conv-bn) before quantizing")
        else:
            child_context = _WalkContext(context.w_qconfig, context.a_qconfig, quantize_output,
                                         relu_after_each_child=name in RELU_AFTER_EACH_CHILD)
            _quantize_children(child, child_context)
            previous = None


def _layer_from_conv_module(conv_module: nn.Module, context: _WalkContext, quantize_output: bool,
                            relu_after: bool) -> QuantizedLayer:
    norm = conv_module.norm
    if norm is not None and not isinstance(norm, nn.Identity):
        raise ValueError(f"ConvModule with a {type(norm).__name__}: fold BatchNorm into the conv before quantizing")
    if tuple(conv_module.order) != ("conv", "norm", "act"):
        raise ValueError(f"ConvModule order {conv_module.order} is not supported (only conv, norm, act)")
    activation = getattr(conv_module, "activate", None)
    if activation is not None and not isinstance(activation, (nn.ReLU, nn.Identity)):
        raise ValueError(f"ConvModule activation {type(activation).__name__} is not supported (only ReLU folds into "
                         "a quantized layer)")
    relu = relu_after or isinstance(activation, nn.ReLU)
    return QuantizedLayer(conv_module.conv, context.w_qconfig, context.a_qconfig, relu=relu,
                          quantize_output=quantize_output)


def _keep_first_layer_8bit(backbone: nn.Module) -> None:
    first = next((m for m in backbone.modules() if isinstance(m, QuantizedLayer)), None)
    if first is None:
        raise ValueError(f"backbone {type(backbone).__name__} has no quantizable layer")
    first.w_qconfig = {**first.w_qconfig, "bit": FIRST_LAYER_WEIGHT_BITS}
    first.weight_quantizer = WeightQuantizer(first.w_qconfig)


def quantization_units(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Every outermost QuantizedLayer / QuantizedBlock with its qualified name, in registration order."""
    units: List[Tuple[str, nn.Module]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, (QuantizedLayer, QuantizedBlock)):
                units.append((path, child))
            else:
                visit(child, path + ".")

    visit(model, "")
    return units


def iter_quantizers(module: nn.Module, prefix: str = "") -> Iterator[Tuple[str, str, nn.Module, Mapping]]:
    """(qualified name, 'weight' | 'activation', quantizer, its config) for every quantizer below `module`."""
    for name, sub in module.named_modules(prefix=prefix.rstrip(".")):
        dot = f"{name}." if name else ""
        if isinstance(sub, QuantizedLayer):
            yield f"{dot}weight_quantizer", "weight", sub.weight_quantizer, sub.w_qconfig
            if sub.output_quantizer is not None:
                yield f"{dot}output_quantizer", "activation", sub.output_quantizer, sub.a_qconfig
        elif isinstance(sub, QuantizedBlock):
            yield f"{dot}output_quantizer", "activation", sub.output_quantizer, sub.a_qconfig


def weight_quantizers(module: nn.Module) -> List[Tuple[QuantizedLayer, nn.Module]]:
    """(layer, its weight quantizer) for every QuantizedLayer below `module` (itself included)."""
    return [(m, m.weight_quantizer) for m in module.modules() if isinstance(m, QuantizedLayer)]


def activation_quantizers(module: nn.Module) -> List[nn.Module]:
    return [q for _, kind, q, _ in iter_quantizers(module) if kind == "activation"]

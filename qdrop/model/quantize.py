"""Turn a float detector (BatchNorm folded) into a fake-quantized one, in place.

Backbone and neck are always quantized: every ResNet BasicBlock/Bottleneck becomes one quantized block, every other
conv (the stem, the FPN lateral and output convs) one `QuantizedLayer`. Heads stay full precision unless the
q_config says `quant_head: True`. The first layer's weights keep 8 bits.
"""
from dataclasses import dataclass
from typing import Iterator, List, Mapping, Tuple

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from mmdet.models.utils.conv_module import ConvModule
from qdrop.model.quantized_modules import QuantizedBasicBlock, QuantizedBottleneck
from qdrop.quantization import FakeQuantizeBase, QuantizedBlock, QuantizedLayer, WeightQuantizer, fake_quantizers

FIRST_LAYER_WEIGHT_BITS = 8
# Children whose outputs are final (FPN levels, class scores, box deltas): no output quantizer anywhere below them.
OUTPUT_NOT_QUANTIZED = frozenset({"fpn_convs", "rpn_cls", "rpn_reg", "retina_cls", "retina_reg", "fc_cls", "fc_reg"})
# Layers followed by a functional ReLU in their parent's forward (no nn.ReLU child to find): RPNHead's conv, and
# every fc of the box head's shared/cls/reg branches.
RELU_AFTER = frozenset({"rpn_conv"})
RELU_AFTER_EACH_CHILD = frozenset({"shared_fcs", "cls_fcs", "reg_fcs"})
HEAD_NAMES = ("rpn_head", "roi_head", "bbox_head")


@dataclass(frozen=True)
class _WalkContext:
    w_cfg: Mapping
    a_cfg: Mapping
    quantize_output: bool
    relu_after_each_child: bool = False


def quantize_detector(model: nn.Module, q_config: Mapping) -> nn.Module:
    """Replace backbone and neck layers (and the heads' with `quant_head: True`) by quantized ones, in place.

    A folded ReLU runs inside its layer, before the output quantizer; the model's own ReLU stays where it is, which
    is harmless: applied to a quantized non-negative tensor it changes nothing.
    """
    for key in ("w_qconfig", "a_qconfig"):
        if key not in q_config:
            raise KeyError(f"q_config lacks '{key}' (expected keys: a_qconfig, w_qconfig, calibrate, recon)")
    for part in ("backbone", "neck"):
        if not isinstance(getattr(model, part, None), nn.Module):
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
    _keep_first_layer_8bit(model.backbone, q_config["w_qconfig"])
    return model


def _quantize_children(parent: nn.Module, context: _WalkContext) -> None:
    """Wrap the quantizable children of `parent`, recursing into containers.

    `previous` is the last layer wrapped among `parent`'s direct children, so that an `nn.ReLU` child registered
    right after it (a folded BatchNorm, nn.Identity, in between) folds into it; a ReLU with no such layer before it
    stays as it is. The output flag of a child never changes its siblings'.
    """
    previous = None
    for name, child in list(parent.named_children()):
        quantize_output = context.quantize_output and name not in OUTPUT_NOT_QUANTIZED
        relu_after = context.relu_after_each_child or name in RELU_AFTER
        if isinstance(child, QuantizedBlock):
            raise ValueError(f"{type(parent).__name__}.{name} is already quantized")
        if isinstance(child, (BasicBlock, Bottleneck)):
            block_cls = QuantizedBottleneck if isinstance(child, Bottleneck) else QuantizedBasicBlock
            setattr(parent, name, block_cls(child, context.w_cfg, context.a_cfg))
            previous = None
        elif isinstance(child, ConvModule):
            layer = _layer_from_conv_module(child, context, quantize_output, relu_after)
            setattr(parent, name, layer)
            previous = None if layer.activation is not None else layer
        elif isinstance(child, (nn.Conv2d, nn.Linear)):
            layer = QuantizedLayer(child, nn.ReLU() if relu_after else None, context.w_cfg, context.a_cfg,
                                   qoutput=quantize_output)
            setattr(parent, name, layer)
            previous = None if relu_after else layer
        elif isinstance(child, nn.ReLU):
            if previous is not None:
                previous.activation = nn.ReLU()
            previous = None
        elif isinstance(child, nn.Identity):
            continue  # a folded BatchNorm between a conv and its ReLU
        elif isinstance(child, _BatchNorm):
            raise ValueError(f"{type(parent).__name__}.{name} is a {type(child).__name__}: fold BatchNorm into the "
                             "convs (mmdet.utils.fuse_conv_bn / --fuse-conv-bn) before quantizing")
        else:
            child_context = _WalkContext(context.w_cfg, context.a_cfg, quantize_output,
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
    activation = conv_module.activate
    if activation is not None and not isinstance(activation, (nn.ReLU, nn.Identity)):
        raise ValueError(f"ConvModule activation {type(activation).__name__} is not supported (only ReLU folds into "
                         "a quantized layer)")
    relu = relu_after or isinstance(activation, nn.ReLU)
    return QuantizedLayer(conv_module.conv, nn.ReLU() if relu else None, context.w_cfg, context.a_cfg,
                          qoutput=quantize_output)


def _keep_first_layer_8bit(backbone: nn.Module, w_cfg: Mapping) -> None:
    first = next((m for m in backbone.modules() if isinstance(m, QuantizedLayer)), None)
    if first is None:
        raise ValueError(f"backbone {type(backbone).__name__} has no quantizable layer")
    first.module.weight_fake_quant = WeightQuantizer({**w_cfg, "bit": FIRST_LAYER_WEIGHT_BITS})


def quantization_units(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Every outermost quantized layer or block (a reconstruction unit) with its qualified name, in registration
    order."""
    units: List[Tuple[str, nn.Module]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if isinstance(child, QuantizedBlock):
                units.append((prefix + name, child))
            else:
                visit(child, f"{prefix}{name}.")

    visit(model, "")
    return units


def iter_quantizers(module: nn.Module) -> Iterator[Tuple[str, str, FakeQuantizeBase]]:
    """(qualified name, 'weight' | 'activation', quantizer) for every fake quantizer below `module`."""
    weight_ids = {id(q) for _, q in fake_quantizers(module, "weight")}
    for name, quantizer in fake_quantizers(module):
        yield name, "weight" if id(quantizer) in weight_ids else "activation", quantizer


def weight_quantizers(module: nn.Module) -> List[Tuple[nn.Module, FakeQuantizeBase]]:
    """(weight-quantized conv/linear, its weight quantizer) for every layer below `module`."""
    return [(m, m.weight_fake_quant) for m in module.modules() if isinstance(getattr(m, "weight_fake_quant", None),
                                                                             FakeQuantizeBase)]


def activation_quantizers(module: nn.Module) -> List[FakeQuantizeBase]:
    return [q for _, q in fake_quantizers(module, "activation")]

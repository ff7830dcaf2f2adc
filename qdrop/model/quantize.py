"""Turn a float detector (BatchNorm folded) into a fake-quantized one, in place.

Backbone and neck are always quantized, the heads only with `quant_head: True`. Two tables decide the placement:

* `QUANTIZED_FORMS`: module type -> its quantized form. A ResNet BasicBlock/Bottleneck (ResNeXt's and RegNet's
  blocks are Bottlenecks) becomes one quantized block; a ConvModule, conv, transposed conv or linear one
  `QuantizedLayer` (a ConvModule's ReLU folds into it), a ConvModule with GroupNorm one `QuantizedConvNormAct` (the
  norm computes in float between the weight-quantized conv and the activation). Other modules are walked into; an
  `nn.ReLU` registered right after a wrapped conv/linear folds into that layer.
* `CHILD_ROLES`: parent module type -> what its forward does with some of its children that the module tree does
  not show: a ReLU after a child (functional, or the parent's own ReLU module called on the child's output; folded
  into the child's layer), a ReLU module that the forward calls elsewhere than after the child registered before it
  (never folded by registration order), or outputs that are final (FPN levels, class scores, box deltas or
  distances, centerness, mask logits), below which no output quantizer is placed. The parents inside a ModuleList
  (Cascade R-CNN's stages `roi_head.bbox_head.{i}`) are looked up by their own type like any other.

A third, `KEPT_FLOAT`, names the module types that stay float inside the quantized parts and why (GroupNorm, the
per-level Scale, GFL's Integral); placement.txt lists them (qdrop.model.placement.float_parts).

Every quantizer is built once, with its module's final settings: the q_config's sections with the `overrides:`
entries that apply to the module (qdrop.config.SettingsResolver); a default first entry keeps the first layer's
weights at 8 bits.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet.models.backbones import BasicBlock, Bottleneck
from mmdet.models.dense_heads import ATSSHead, FCOSHead, GFLHead, Integral, RetinaHead, RPNHead
from mmdet.models.necks import FPN
from mmdet.models.roi_heads import FCNMaskHead, Shared2FCBBoxHead
from mmdet.models.utils import Scale
from mmdet.models.utils.conv_module import ConvModule
from qdrop.config.errors import QConfigError
from qdrop.config.overrides import ModuleOverride, ModuleSettings, SettingsResolver
from qdrop.config.q_config import QConfig
from qdrop.model.conv_norm import QuantizedConvNormAct
from qdrop.model.errors import PlacementError
from qdrop.model.resnet_blocks import QuantizedBasicBlock, QuantizedBottleneck
from qdrop.quantization import QuantizedLayer, QuantizedUnit, QuantizerConfig, set_fast_path


@dataclass(frozen=True)
class ChildRole:
    """What a parent's forward does with one of its children, beyond calling it."""

    relu_after: bool = False  # a ReLU on the child's output (F.relu, or the parent's ReLU module)
    relu_after_each: bool = False  # F.relu on the output of each module of this container
    final_output: bool = False  # a detector output or an FPN level: no output quantizer in or below the child
    applied_elsewhere: bool = False  # a ReLU module the forward calls where another role says: never folded


RELU_AFTER = ChildRole(relu_after=True)
RELU_AFTER_EACH = ChildRole(relu_after_each=True)
FINAL_OUTPUT = ChildRole(final_output=True)
APPLIED_ELSEWHERE = ChildRole(applied_elsewhere=True)
PLAIN = ChildRole()

# Parent type -> {child attribute: role}; looked up along the parent's class hierarchy (most derived first).
CHILD_ROLES: dict[type, dict[str, ChildRole]] = {
    FPN: {"fpn_convs": FINAL_OUTPUT},
    RPNHead: {"rpn_conv": RELU_AFTER, "rpn_cls": FINAL_OUTPUT, "rpn_reg": FINAL_OUTPUT},
    RetinaHead: {"retina_cls": FINAL_OUTPUT, "retina_reg": FINAL_OUTPUT},
    Shared2FCBBoxHead: {"shared_fcs": RELU_AFTER_EACH, "fc_cls": FINAL_OUTPUT, "fc_reg": FINAL_OUTPUT},
    FCOSHead: {"conv_cls": FINAL_OUTPUT, "conv_reg": FINAL_OUTPUT, "conv_centerness": FINAL_OUTPUT},
    ATSSHead: {"atss_cls": FINAL_OUTPUT, "atss_reg": FINAL_OUTPUT, "atss_centerness": FINAL_OUTPUT},
    GFLHead: {"gfl_cls": FINAL_OUTPUT, "gfl_reg": FINAL_OUTPUT},
    # `relu` (registered after conv_logits) follows the 2x ConvTranspose2d `upsample` only: folded there.
    FCNMaskHead: {"upsample": RELU_AFTER, "conv_logits": FINAL_OUTPUT, "relu": APPLIED_ELSEWHERE},
}
# Module type -> why it stays float where the rest of its part is quantized; looked up along the class hierarchy.
KEPT_FLOAT: dict[type, str] = {
    nn.GroupNorm: "per-image statistics over the padded map, cannot fold into the conv: float between the "
    "quantized conv and the activation",
    Scale: "one scalar times a final regression output (elementwise; a Mul in the ONNX graph)",
    Integral: "post-processing of the bin logits (softmax, expected bin; in get_bboxes and the loss)",
}
# The detector's parts that are always quantized, and the heads, quantized with `quant_head: True`.
TRUNK = ("backbone", "neck")
HEADS = ("rpn_head", "roi_head", "bbox_head")
FIRST_LAYER_WEIGHT_BITS = 8


@dataclass(frozen=True)
class Site:
    """Where a module is wrapped: its qualified name and the settings of the quantizers built for it."""

    name: str
    w_cfg: QuantizerConfig
    a_cfg: QuantizerConfig
    quantize_output: bool  # the unit gets an output quantizer
    relu_after: bool  # the parent's forward applies F.relu to the module's output
    resolver: SettingsResolver  # the settings of the layers inside a block, by qualified name

    def layer_cfgs(self, child: str) -> tuple[QuantizerConfig, QuantizerConfig]:
        """(weight, activation) settings of the layer `child` inside the block at this site."""
        settings = self.resolver.settings(f"{self.name}.{child}")
        if not settings.quantize:
            raise QConfigError(
                f"q_config overrides: quantize: False keeps whole units (layers or residual blocks) "
                f"float; {self.name}.{child} is a part of one: name its unit instead"
            )
        return settings.w_cfg, settings.a_cfg


def _residual_block(block_cls: type) -> Callable[[nn.Module, Site], QuantizedUnit]:
    def build(block: nn.Module, site: Site) -> QuantizedUnit:
        return block_cls(block, site.w_cfg, site.a_cfg, layer_cfgs=site.layer_cfgs)

    return build


def _layer(module: nn.Module, site: Site) -> QuantizedLayer:
    return QuantizedLayer(
        module, nn.ReLU() if site.relu_after else None, site.w_cfg, site.a_cfg, qoutput=site.quantize_output
    )


def _transposed_conv_layer(module: nn.ConvTranspose2d, site: Site) -> QuantizedLayer:
    """A ConvTranspose2d as a `QuantizedLayer`; its weight quantizer runs along the weight's output-channel axis 1
    (`QConvTranspose2d`)."""
    if module.groups != 1 and site.w_cfg.ch_axis >= 0:
        raise PlacementError(
            f"{site.name}: a grouped ConvTranspose2d (groups={module.groups}) cannot be quantized per output channel; "
            "give it w_qconfig ch_axis -1 (per tensor) in the q_config's overrides"
        )
    return _layer(module, site)


def _layer_from_conv_module(conv_module: ConvModule, site: Site) -> QuantizedUnit:
    """A ConvModule's conv and its ReLU as a `QuantizedLayer`; with GroupNorm, a `QuantizedConvNormAct`."""
    norm = conv_module.norm
    with_group_norm = isinstance(norm, nn.GroupNorm)
    if norm is not None and not isinstance(norm, nn.Identity) and not with_group_norm:
        raise PlacementError(
            f"{site.name}: ConvModule with a {type(norm).__name__}: fold BatchNorm into the conv before quantizing"
        )
    if tuple(conv_module.order) != ("conv", "norm", "act"):
        raise PlacementError(
            f"{site.name}: ConvModule order {conv_module.order} is not supported (only conv, norm, act)"
        )
    activation = conv_module.activate
    if activation is not None and not isinstance(activation, (nn.ReLU, nn.Identity)):
        raise PlacementError(
            f"{site.name}: ConvModule activation {type(activation).__name__} is not supported (only "
            "ReLU folds into a quantized layer)"
        )
    relu = site.relu_after or isinstance(activation, nn.ReLU)
    if with_group_norm:
        return QuantizedConvNormAct(
            conv_module.conv,
            norm,
            nn.ReLU() if relu else None,
            site.w_cfg,
            site.a_cfg,
            qoutput=site.quantize_output,
        )
    return QuantizedLayer(
        conv_module.conv, nn.ReLU() if relu else None, site.w_cfg, site.a_cfg, qoutput=site.quantize_output
    )


# Module type -> builder of its quantized form; looked up along the module's class hierarchy (most derived first).
QUANTIZED_FORMS: dict[type, Callable[[nn.Module, Site], QuantizedUnit]] = {
    BasicBlock: _residual_block(QuantizedBasicBlock),
    Bottleneck: _residual_block(QuantizedBottleneck),
    ConvModule: _layer_from_conv_module,
    nn.Conv2d: _layer,
    nn.ConvTranspose2d: _transposed_conv_layer,
    nn.Linear: _layer,
}


def lookup_by_type(table: dict[type, Any], module: nn.Module) -> Optional[Any]:
    """The entry of `module`'s most derived class that `table` names, or None."""
    return next((table[cls] for cls in type(module).__mro__ if cls in table), None)


@dataclass(frozen=True)
class _WalkContext:
    resolver: SettingsResolver
    quantize_output: bool
    relu_after_each_child: bool = False
    sites: list[str] = field(default_factory=list)  # every quantizable module met, wrapped or kept float


def quantize_detector(model: nn.Module, q_config: Union[QConfig, Mapping]) -> nn.Module:
    """Replace the trunk's layers and blocks (and the heads' with `quant_head: True`) by quantized ones, in place.

    A folded ReLU runs inside its layer, before the output quantizer; the model's own ReLU stays where it is, which
    is harmless: applied to a quantized non-negative tensor it changes nothing.

    Args:
        model: a detector with `backbone` and `neck` (BatchNorm folded).
        q_config: a `QConfig`, or a q_config mapping (validated by `QConfig.from_mapping`).

    Returns:
        `model`, quantized in place.
    """
    q_config = QConfig.from_mapping(q_config)
    for part in TRUNK:
        if not isinstance(getattr(model, part, None), nn.Module):
            raise PlacementError(
                f"{type(model).__name__} has no '{part}': only detectors with a backbone and a neck "
                "(extract_feat = backbone + neck) can be quantized"
            )
    resolver = SettingsResolver(
        ModuleSettings(q_config.w_qconfig, q_config.a_qconfig),
        (first_layer_override(model.backbone),) + q_config.overrides,
        checked_from=1,
    )
    context = _WalkContext(resolver, quantize_output=True)
    parts = TRUNK + (HEADS if q_config.quant_head else ())
    for part in parts:
        module = getattr(model, part, None)
        if module is not None:
            _quantize_children(module, part + ".", context)
    inner_layers = [
        name for name, unit in model.named_modules() if isinstance(unit, QuantizedLayer) and name not in context.sites
    ]
    resolver.check_every_entry_matches(context.sites + inner_layers)
    set_fast_path(model, q_config.recon.fast)
    return model


def _quantize_children(parent: nn.Module, prefix: str, context: _WalkContext) -> None:
    """Wrap the quantizable children of `parent` (qualified names start with `prefix`), recursing into others.

    `previous` is the last layer wrapped among `parent`'s direct children, so that an `nn.ReLU` child registered
    right after it (a folded BatchNorm, nn.Identity, in between) folds into it; a ReLU with no such layer before it,
    or one whose role says the forward applies it elsewhere, stays as it is. The output flag of a child never
    changes its siblings'.
    """
    roles = lookup_by_type(CHILD_ROLES, parent) or {}
    previous = None
    for name, child in list(parent.named_children()):
        role = roles.get(name, PLAIN)
        settings = context.resolver.settings(prefix + name)
        site = Site(
            prefix + name,
            settings.w_cfg,
            settings.a_cfg,
            quantize_output=context.quantize_output and not role.final_output,
            relu_after=context.relu_after_each_child or role.relu_after,
            resolver=context.resolver,
        )
        if isinstance(child, QuantizedUnit):
            raise PlacementError(f"{site.name} is already quantized")
        build = lookup_by_type(QUANTIZED_FORMS, child)
        if build is not None:
            context.sites.append(site.name)
            if not settings.quantize:
                previous = None  # kept float
                continue
            unit = build(child, site)
            setattr(parent, name, unit)
            previous = unit if isinstance(unit, QuantizedLayer) and unit.activation is None else None
        elif isinstance(child, nn.ReLU):
            if previous is not None and not role.applied_elsewhere:
                previous.activation = nn.ReLU()
            previous = None
        elif isinstance(child, nn.Identity):
            continue  # a folded BatchNorm between a conv and its ReLU
        elif isinstance(child, _BatchNorm):
            raise PlacementError(
                f"{site.name} is a {type(child).__name__}: fold BatchNorm into the convs "
                "(mmdet.utils.fuse_conv_bn / --fuse-conv-bn) before quantizing"
            )
        else:
            child_context = _WalkContext(
                context.resolver,
                site.quantize_output,
                relu_after_each_child=role.relu_after_each,
                sites=context.sites,
            )
            _quantize_children(child, site.name + ".", child_context)
            previous = None


def first_layer_override(backbone: nn.Module) -> ModuleOverride:
    """The default first entry of `overrides:`: the backbone's first conv/linear (the one that sees the image)
    keeps 8-bit weights."""
    first = next(
        (
            name
            for name, module in backbone.named_modules(prefix="backbone")
            if isinstance(module, (ConvModule, nn.Conv2d, nn.Linear))
        ),
        None,
    )
    if first is None:
        raise PlacementError(f"backbone {type(backbone).__name__} has no quantizable layer")
    return ModuleOverride(first, w_qconfig=(("bit", FIRST_LAYER_WEIGHT_BITS),))


def quantization_units(model: nn.Module) -> list[tuple[str, QuantizedUnit]]:
    """The units that reconstruction optimises: every outermost `QuantizedUnit` (layer or block).

    Args:
        model: a quantized model.

    Returns:
        (qualified name, unit) pairs in registration order.
    """
    units: list[tuple[str, QuantizedUnit]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if isinstance(child, QuantizedUnit):
                units.append((prefix + name, child))
            else:
                visit(child, f"{prefix}{name}.")

    visit(model, "")
    return units

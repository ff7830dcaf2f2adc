"""The detector's network (ResNet / ResNeXt / RegNet, FPN, dense heads, box head, FCN mask head) written into a
GraphBuilder module by module.

Quantized layers and blocks keep their quantizers: every enabled activation quantizer becomes a QDQ pair and every
enabled weight quantizer an integer initializer with a DequantizeLinear; everything else is float (GroupNorm, the
heads' per-level Scale, FCOS's distance transform). BatchNorm must be folded into the convs first. The dense heads
are written as in eval mode.
"""

from collections.abc import Sequence

import numpy as np
from torch import nn

from mmdet.models.backbones import RegNet
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.models.dense_heads import ATSSHead, FCOSHead, GFLHead, RetinaHead, RPNHead
from mmdet.models.necks import FPN
from mmdet.models.roi_heads import FCNMaskHead
from mmdet.models.utils import Scale
from mmdet.models.utils.conv_module import ConvModule
from qdrop.model import QuantizedBasicBlock, QuantizedBottleneck, QuantizedConvNormAct
from qdrop.quantization import WEIGHT_QUANTIZED_TYPES, FakeQuantizeBase, QuantizedLayer

from .graph import GraphBuilder
from .qdq import integer_weight, quant_params

ACTIVATION_CHANNEL_AXIS = 1  # NCHW


class NetworkWriter:
    """Writes modules of ``root`` into ``graph``; node names are the modules' qualified names.

    Args:
        graph: the graph being built.
        root: the module whose ``named_modules`` give the names (the detector).
    """

    def __init__(self, graph: GraphBuilder, root: nn.Module):
        self.graph = graph
        self.names: dict[int, str] = {id(module): name for name, module in root.named_modules()}

    def name_of(self, module: nn.Module) -> str:
        return self.names.get(id(module), type(module).__name__)

    # ------------------------------------------------------------------------------------------------ modules
    def module(self, module: nn.Module, x: str) -> str:
        """The output of ``module`` applied to the tensor named ``x``."""
        if isinstance(module, QuantizedLayer):
            return self.quantized_layer(module, x)
        if isinstance(module, QuantizedConvNormAct):
            return self.quantized_conv_norm(module, x)
        if isinstance(module, (QuantizedBasicBlock, QuantizedBottleneck)):
            return self.quantized_residual(module, x)
        if isinstance(module, (BasicBlock, Bottleneck)):
            return self.float_residual(module, x)
        if isinstance(module, ConvModule):
            return self.conv_module(module, x)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            return self.weighted(module, x)
        if isinstance(module, nn.ReLU):
            return self.relu(x, self.name_of(module))
        if isinstance(module, nn.Identity):
            return x
        if isinstance(module, nn.MaxPool2d):
            return self.max_pool(module, x)
        if isinstance(module, nn.GroupNorm):
            return self.group_norm(module, x)
        if isinstance(module, Scale):
            return self.scale(module, x)
        if isinstance(module, nn.Sequential):
            for child in module:
                x = self.module(child, x)
            return x
        raise ValueError(
            f"ONNX export: {self.name_of(module)} is a {type(module).__name__}, which the exporter does "
            "not write (BatchNorm must be folded: --fuse-conv-bn)"
        )

    def quantized_layer(self, layer: QuantizedLayer, x: str) -> str:
        out = self.weighted(layer.module, x)
        if layer.activation is not None:
            out = self.module(layer.activation, out)
        if layer.qoutput:
            out = self.activation_quantizer(layer.block_post_act_fake_quantize, out)
        return out

    def quantized_conv_norm(self, unit: QuantizedConvNormAct, x: str) -> str:
        """Weight-quantized conv, float GroupNorm, activation, output QDQ."""
        out = self.module(unit.norm, self.weighted(unit.module, x))
        if unit.activation is not None:
            out = self.module(unit.activation, out)
        if unit.qoutput:
            out = self.activation_quantizer(unit.block_post_act_fake_quantize, out)
        return out

    def quantized_residual(self, block: nn.Module, x: str) -> str:
        identity = x if block.downsample is None else self.module(block.downsample, x)
        convs = [block.conv1, block.conv2] + ([block.conv3] if isinstance(block, QuantizedBottleneck) else [])
        out = x
        for conv in convs:
            out = self.module(conv, out)
        name = self.name_of(block)
        out = self.relu(self.graph.node("Add", [out, identity], f"{name}/add"), f"{name}/relu")
        if block.qoutput:
            out = self.activation_quantizer(block.block_post_act_fake_quantize, out)
        return out

    def float_residual(self, block: nn.Module, x: str) -> str:
        identity = x if block.downsample is None else self.module(block.downsample, x)
        stages = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
        if isinstance(block, Bottleneck):
            stages.append((block.conv3, block.bn3))
        out = x
        for index, (conv, norm) in enumerate(stages):
            out = self.module(norm, self.module(conv, out))
            if index < len(stages) - 1:
                out = self.relu(out, f"{self.name_of(conv)}/relu")
        name = self.name_of(block)
        return self.relu(self.graph.node("Add", [out, identity], f"{name}/add"), f"{name}/relu")

    def conv_module(self, conv_module: ConvModule, x: str) -> str:
        for part in conv_module.order:
            if part == "conv":
                x = self.module(conv_module.conv, x)
            elif part == "norm" and conv_module.norm is not None:
                x = self.module(conv_module.norm, x)
            elif part == "act" and conv_module.activate is not None:
                x = self.module(conv_module.activate, x)
        return x

    def weighted(self, module: nn.Module, x: str) -> str:
        """Conv, ConvTranspose or Gemm; a QConv2d/QConvTranspose2d/QLinear with its fake quantizer on takes its
        integer weight through DequantizeLinear on the weight's output-channel axis (1 for ConvTranspose)."""
        name = self.name_of(module)
        quantizer = getattr(module, "weight_fake_quant", None)
        if isinstance(module, WEIGHT_QUANTIZED_TYPES) and quantizer.fake_quant_enabled:
            ints, params = integer_weight(
                module.weight, quantizer, f"{name}.weight_fake_quant", channel_axis=module.OUTPUT_CHANNEL_AXIS
            )
            weight = self.graph.dequantized_weight(ints, params, name)
        else:
            weight = self.graph.constant(f"{name}/weight", module.weight.detach().cpu().numpy())
        inputs = [x, weight]
        if module.bias is not None:
            inputs.append(self.graph.constant(f"{name}/bias", module.bias.detach().cpu().numpy()))
        if isinstance(module, nn.Linear):
            return self.graph.node("Gemm", inputs, name, transB=1)
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError(
                f"ONNX export: {name} uses padding {module.padding!r} / {module.padding_mode!r}; only "
                "explicit zero padding is written"
            )
        pad_h, pad_w = module.padding
        attributes = dict(
            kernel_shape=list(module.kernel_size),
            strides=list(module.stride),
            pads=[pad_h, pad_w, pad_h, pad_w],
            dilations=list(module.dilation),
            group=module.groups,
        )
        if isinstance(module, nn.ConvTranspose2d):
            return self.graph.node(
                "ConvTranspose", inputs, name, output_padding=list(module.output_padding), **attributes
            )
        return self.graph.node("Conv", inputs, name, **attributes)

    def activation_quantizer(self, quantizer: FakeQuantizeBase, x: str) -> str:
        if not quantizer.fake_quant_enabled:
            return x
        name = self.name_of(quantizer)
        axis = ACTIVATION_CHANNEL_AXIS if quantizer.ch_axis >= 0 else -1
        if quantizer.ch_axis not in (-1, ACTIVATION_CHANNEL_AXIS):
            raise ValueError(
                f"{name}: per-channel activation quantizers are exported on the channel axis "
                f"({ACTIVATION_CHANNEL_AXIS}), got ch_axis {quantizer.ch_axis}"
            )
        return self.graph.quantize_dequantize(x, quant_params(quantizer, name, axis), name)

    def relu(self, x: str, name: str) -> str:
        return self.graph.node("Relu", [x], name)

    def max_pool(self, pool: nn.MaxPool2d, x: str) -> str:
        def pair(value):
            return list(value) if isinstance(value, (tuple, list)) else [value, value]

        if pool.dilation not in (1, (1, 1)):
            raise ValueError(f"ONNX export: {self.name_of(pool)} has dilation {pool.dilation}; only 1 is written")
        pad_h, pad_w = pair(pool.padding)
        return self.graph.node(
            "MaxPool",
            [x],
            self.name_of(pool),
            kernel_shape=pair(pool.kernel_size),
            strides=pair(pool.stride if pool.stride is not None else pool.kernel_size),
            pads=[pad_h, pad_w, pad_h, pad_w],
            ceil_mode=int(pool.ceil_mode),
        )

    def scale(self, scale: Scale, x: str) -> str:
        """x times the Scale's scalar (a float32 constant)."""
        name = self.name_of(scale)
        value = self.graph.constant(f"{name}/value", scale.scale.detach().cpu().numpy().reshape(()))
        return self.graph.node("Mul", [x, value], name)

    def group_norm(self, norm: nn.GroupNorm, x: str) -> str:
        """(N, C, H, W) -> (N, G, C/G * H * W), normalised per group, back to (N, C, H, W), per-channel affine."""
        name = self.name_of(norm)
        graph = self.graph
        grouped_shape = graph.constant(f"{name}/grouped_shape", np.array([0, norm.num_groups, -1]), "INT64")
        grouped = graph.node("Reshape", [x, grouped_shape], f"{name}/grouped")
        ones = graph.constant(f"{name}/unit_scale", np.ones(norm.num_groups, dtype=np.float32))
        zeros = graph.constant(f"{name}/zero_bias", np.zeros(norm.num_groups, dtype=np.float32))
        normed = graph.node("InstanceNormalization", [grouped, ones, zeros], f"{name}/normalize", epsilon=norm.eps)
        out = graph.node("Reshape", [normed, graph.node("Shape", [x], f"{name}/shape")], f"{name}/ungrouped")
        if norm.affine:
            channel_shape = (-1, 1, 1)  # broadcast over H, W
            weight = graph.constant(f"{name}/weight", norm.weight.detach().cpu().numpy().reshape(channel_shape))
            bias = graph.constant(f"{name}/bias", norm.bias.detach().cpu().numpy().reshape(channel_shape))
            out = graph.node("Add", [graph.node("Mul", [out, weight], f"{name}/scaled"), bias], name)
        return out

    # ------------------------------------------------------------------------------------------------ detector parts
    def resnet(self, backbone: ResNet, x: str) -> list[str]:
        """The stem (RegNet's has no max-pool), every stage, and the outputs of the stages in ``out_indices``;
        ResNeXt and RegNet blocks are Bottlenecks with a grouped conv2."""
        stem = [backbone.conv1, backbone.bn1, backbone.relu]
        if not isinstance(backbone, RegNet):
            stem.append(backbone.maxpool)
        for part in stem:
            x = self.module(part, x)
        outs = []
        for index, layer_name in enumerate(backbone.res_layers):
            x = self.module(getattr(backbone, layer_name), x)
            if index in backbone.out_indices:
                outs.append(x)
        return outs

    def fpn(self, neck: FPN, inputs: Sequence[str]) -> list[str]:
        """Laterals, the top-down path (nearest upsampling to the finer level's size), output convs, extra levels."""
        if len(inputs) != neck.num_ins:
            raise ValueError(f"FPN expects {neck.num_ins} inputs, got {len(inputs)}")
        name = self.name_of(neck)
        laterals = [self.module(conv, inputs[i + neck.start_level]) for i, conv in enumerate(neck.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            upsampled = self.upsample(laterals[i], laterals[i - 1], neck.upsample_cfg, f"{name}/top_down{i}")
            laterals[i - 1] = self.graph.node("Add", [laterals[i - 1], upsampled], f"{name}/merge{i - 1}")
        used = len(laterals)
        outs = [self.module(neck.fpn_convs[i], laterals[i]) for i in range(used)]
        if neck.num_outs > used:
            if not neck.add_extra_convs:
                for level in range(used, neck.num_outs):
                    outs.append(
                        self.graph.node(
                            "MaxPool", [outs[-1]], f"{name}/extra{level}", kernel_shape=[1, 1], strides=[2, 2]
                        )
                    )
            else:
                source = {
                    "on_input": inputs[neck.backbone_end_level - 1],
                    "on_lateral": laterals[-1],
                    "on_output": outs[-1],
                }[neck.add_extra_convs]
                outs.append(self.module(neck.fpn_convs[used], source))
                for i in range(used + 1, neck.num_outs):
                    previous = outs[-1]
                    if neck.relu_before_extra_convs:
                        previous = self.relu(previous, f"{name}/extra_relu{i}")
                    outs.append(self.module(neck.fpn_convs[i], previous))
        return outs

    def upsample(self, x: str, like: str, upsample_cfg: dict, name: str) -> str:
        """F.interpolate(x, size=like's H, W) in 'nearest' mode (floor of the asymmetric source coordinate)."""
        if upsample_cfg.get("mode", "nearest") != "nearest" or "scale_factor" in upsample_cfg:
            raise ValueError(
                f"ONNX export: FPN upsample_cfg {upsample_cfg} is not written; only mode='nearest' to "
                "the finer level's size"
            )
        graph = self.graph

        def dims(tensor: str, start: int, end: int, shape_name: str, part_name: str) -> str:
            """Shape(tensor)[start:end] as a graph value."""
            return graph.node(
                "Slice",
                [
                    graph.node("Shape", [tensor], f"{name}/{shape_name}"),
                    graph.constant(f"{name}/start{start}", np.array([start]), "INT64"),
                    graph.constant(f"{name}/end{end}", np.array([end]), "INT64"),
                ],
                f"{name}/{part_name}",
            )

        batch_channels = dims(x, 0, 2, "source_shape", "batch_channels")
        spatial = dims(like, 2, 4, "target_shape", "spatial")
        sizes = graph.node("Concat", [batch_channels, spatial], f"{name}/sizes", axis=0)
        return graph.node(
            "Resize",
            [x, "", "", sizes],
            name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    def dense_head(self, head: nn.Module, feats: Sequence[str]) -> tuple[list[str], ...]:
        """The raw outputs of a dense head as its eval-mode forward returns them: one list of per-level tensors per
        kind (RetinaHead, RPNHead, GFLHead: class scores, box regression; FCOSHead, ATSSHead: and centerness)."""
        writers = (
            (RetinaHead, self._retina_level),
            (RPNHead, self._rpn_level),
            (FCOSHead, self._fcos_level),
            (ATSSHead, self._atss_level),
            (GFLHead, self._gfl_level),
        )
        write = next((writer for head_type, writer in writers if isinstance(head, head_type)), None)
        if write is None:
            raise ValueError(
                f"ONNX export: dense head {type(head).__name__} is not written (RetinaHead, RPNHead, FCOSHead, "
                "ATSSHead, GFLHead)"
            )
        per_level = [write(head, feat, level) for level, feat in enumerate(feats)]
        return tuple(list(kind) for kind in zip(*per_level))

    def _tower(self, convs: nn.ModuleList, x: str) -> str:
        for conv in convs:
            x = self.module(conv, x)
        return x

    def _retina_level(self, head: RetinaHead, feat: str, level: int) -> tuple[str, str]:
        cls_feat, reg_feat = self._tower(head.cls_convs, feat), self._tower(head.reg_convs, feat)
        return self.module(head.retina_cls, cls_feat), self.module(head.retina_reg, reg_feat)

    def _rpn_level(self, head: RPNHead, feat: str, level: int) -> tuple[str, str]:
        shared = self.relu(self.module(head.rpn_conv, feat), f"{self.name_of(head)}/relu")
        return self.module(head.rpn_cls, shared), self.module(head.rpn_reg, shared)

    def _fcos_level(self, head: FCOSHead, feat: str, level: int) -> tuple[str, str, str]:
        """FCOSHead.forward_single in eval mode: distances relu(scale * reg) * stride with `norm_on_bbox`, else
        exp(scale * reg)."""
        name = self.name_of(head)
        cls_feat, reg_feat = self._tower(head.cls_convs, feat), self._tower(head.reg_convs, feat)
        cls_score = self.module(head.conv_cls, cls_feat)
        bbox_pred = self.module(head.scales[level], self.module(head.conv_reg, reg_feat))
        centerness = self.module(head.conv_centerness, reg_feat if head.centerness_on_reg else cls_feat)
        if head.norm_on_bbox:
            bbox_pred = self.relu(bbox_pred, f"{name}/distances_relu{level}")
            stride = self.graph.constant(f"{name}/stride{level}", np.array(float(head.strides[level])))
            bbox_pred = self.graph.node("Mul", [bbox_pred, stride], f"{name}/distances{level}")
        else:
            bbox_pred = self.graph.node("Exp", [bbox_pred], f"{name}/distances{level}")
        return cls_score, bbox_pred, centerness

    def _atss_level(self, head: ATSSHead, feat: str, level: int) -> tuple[str, str, str]:
        cls_feat, reg_feat = self._tower(head.cls_convs, feat), self._tower(head.reg_convs, feat)
        bbox_pred = self.module(head.scales[level], self.module(head.atss_reg, reg_feat))
        return self.module(head.atss_cls, cls_feat), bbox_pred, self.module(head.atss_centerness, reg_feat)

    def _gfl_level(self, head: GFLHead, feat: str, level: int) -> tuple[str, str]:
        """Class-quality logits and the scaled bin logits (the Integral runs in get_bboxes)."""
        cls_feat, reg_feat = self._tower(head.cls_convs, feat), self._tower(head.reg_convs, feat)
        return self.module(head.gfl_cls, cls_feat), self.module(head.scales[level], self.module(head.gfl_reg, reg_feat))

    def box_head(self, head: nn.Module, roi_feats: str) -> tuple[str, str]:
        """Shared2FCBBoxHead: flatten the (N, C, 7, 7) RoI features, shared fcs with ReLU, then fc_cls, fc_reg."""
        name = self.name_of(head)
        x = self.graph.node("Flatten", [roi_feats], f"{name}/flatten", axis=1)  # (N, C * 7 * 7)
        for fc in head.shared_fcs:
            x = self.relu(self.module(fc, x), f"{self.name_of(fc)}/relu")
        return self.module(head.fc_cls, x), self.module(head.fc_reg, x)

    def mask_head(self, head: FCNMaskHead, mask_feats: str) -> str:
        """FCNMaskHead: the convs (conv + ReLU) on the (N, C, 14, 14) RoI features, the 2x ConvTranspose2d
        ``upsample`` and the ReLU the head applies after it, then the 1x1 ``conv_logits``: (N, K, 28, 28) logits."""
        if head.upsample is not None and head.upsample_method != "deconv":
            raise ValueError(
                f"ONNX export: {self.name_of(head)} upsamples with {head.upsample_method!r}; only 'deconv' (a "
                "ConvTranspose2d, mmdetection's default) or no upsampling is written"
            )
        x = self._tower(head.convs, mask_feats)
        if head.upsample is not None:
            x = self.relu(self.module(head.upsample, x), f"{self.name_of(head.upsample)}/relu")
        return self.module(head.conv_logits, x)

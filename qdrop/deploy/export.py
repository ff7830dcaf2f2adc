"""Detector -> ONNX graphs: the network up to the heads' raw outputs, with every quantizer as QDQ.

A single-stage detector is one graph: ``img`` -> its dense head's raw outputs per level, ``cls_score_<l>``,
``bbox_pred_<l>`` and, for FCOS and ATSS, ``centerness_<l>`` (GFL's ``bbox_pred_<l>`` are the scaled bin logits; FCOS's
are the eval-mode distances). Faster R-CNN is two:
the network graph ``img`` -> FPN levels ``feat_<l>`` and the RPN's ``rpn_cls_<l>``, ``rpn_reg_<l>``, and the box-head
graph ``roi_feats`` (N, C, 7, 7) -> ``cls_score``, ``bbox_pred``; proposals, their NMS and RoI pooling run in
between in the project's own code.
"""

import os.path as osp
from collections.abc import Sequence
from typing import Optional

from torch import nn

from mmdet.models.dense_heads import ATSSHead, FCOSHead

from .dependencies import import_onnx
from .graph import GraphBuilder
from .network import NetworkWriter

DEFAULT_OPSET = 21
NETWORK = "network"
BOX_HEAD = "bbox_head"


def box_head_path(network_path: str) -> str:
    """Where the box-head graph of a two-stage detector sits next to ``network_path`` (FILE.onnx ->
    FILE.bbox_head.onnx)."""
    stem, ext = osp.splitext(network_path)
    return f"{stem}.{BOX_HEAD}{ext or '.onnx'}"


def is_two_stage(model: nn.Module) -> bool:
    return getattr(model, "roi_head", None) is not None


def dense_output_kinds(head: nn.Module) -> tuple[str, ...]:
    """The kinds of raw output of a single-stage detector's dense head, in the order of its forward and of the
    arguments of its ``get_bboxes``; the network graph names them ``<kind>_<level>``."""
    if isinstance(head, (FCOSHead, ATSSHead)):
        return ("cls_score", "bbox_pred", "centerness")
    return ("cls_score", "bbox_pred")


def network_output_names(model: nn.Module) -> list[str]:
    """The network graph's outputs in order: for a single-stage detector every kind of head output over the levels,
    for a two-stage one the FPN levels ``feat_<l>`` and the RPN's ``rpn_cls_<l>``, ``rpn_reg_<l>``."""
    if is_two_stage(model):
        rpn_levels = model.rpn_head.prior_generator.num_levels
        return [f"feat_{i}" for i in range(model.neck.num_outs)] + [
            f"{kind}_{i}" for kind in ("rpn_cls", "rpn_reg") for i in range(rpn_levels)
        ]
    levels = model.bbox_head.prior_generator.num_levels
    return [f"{kind}_{i}" for kind in dense_output_kinds(model.bbox_head) for i in range(levels)]


def export_detector(
    model: nn.Module, opset: int = DEFAULT_OPSET, shape: Optional[Sequence[int]] = None
) -> dict[str, object]:
    """The detector's graphs as ONNX ModelProtos: {'network': ...} and, for two-stage detectors, {'bbox_head': ...}.

    Args:
        model: a detector with BatchNorm folded, float or quantized (calibrated).
        opset: the ONNX opset; INT4/UINT4 tensors (2- to 4-bit quantizers) need 21.
        shape: (H, W) of the input, or None for dynamic height and width (batch size is always dynamic).
    """
    onnx = import_onnx()
    height, width = (shape[0], shape[1]) if shape is not None else ("height", "width")
    graph = GraphBuilder(opset)
    writer = NetworkWriter(graph, model)
    feats = writer.fpn(model.neck, writer.resnet(model.backbone, "img"))
    float_info = onnx.helper.make_tensor_value_info
    image = float_info("img", onnx.TensorProto.FLOAT, ["batch", 3, height, width])
    unknown_4d = [None] * 4
    if is_two_stage(model):
        cls_scores, bbox_preds = writer.dense_head(model.rpn_head, feats)
        named = (
            [(f"feat_{i}", t) for i, t in enumerate(feats)]
            + [(f"rpn_cls_{i}", t) for i, t in enumerate(cls_scores)]
            + [(f"rpn_reg_{i}", t) for i, t in enumerate(bbox_preds)]
        )
    else:
        head_outputs = writer.dense_head(model.bbox_head, feats)
        kinds = dense_output_kinds(model.bbox_head)
        if len(head_outputs) != len(kinds):
            raise ValueError(f"ONNX export: {type(model.bbox_head).__name__} gave {len(head_outputs)} kinds of output")
        named = [(f"{kind}_{i}", t) for kind, levels in zip(kinds, head_outputs) for i, t in enumerate(levels)]
    outputs = [_rename(graph, tensor, output) for output, tensor in named]
    graphs = {
        NETWORK: graph.model(
            [image],
            [float_info(o, onnx.TensorProto.FLOAT, unknown_4d) for o in outputs],
            f"{type(model).__name__}_network",
        )
    }
    if is_two_stage(model):
        graphs[BOX_HEAD] = _box_head_graph(model, opset)
    return graphs


def _box_head_graph(model: nn.Module, opset: int):
    onnx = import_onnx()
    head = model.roi_head.bbox_head
    graph = GraphBuilder(opset)
    writer = NetworkWriter(graph, model)
    cls_score, bbox_pred = writer.box_head(head, "roi_feats")
    outputs = [_rename(graph, cls_score, "cls_score"), _rename(graph, bbox_pred, "bbox_pred")]
    float_info = onnx.helper.make_tensor_value_info
    size = head.roi_feat_size
    roi_feats = float_info("roi_feats", onnx.TensorProto.FLOAT, ["num_rois", head.in_channels, size, size])
    return graph.model(
        [roi_feats],
        [float_info(o, onnx.TensorProto.FLOAT, [None, None]) for o in outputs],
        f"{type(model).__name__}_bbox_head",
    )


def _rename(graph: GraphBuilder, tensor: str, output: str) -> str:
    """Expose ``tensor`` under the graph-output name ``output`` (an Identity node)."""
    return graph.node("Identity", [tensor], output)


def save_graphs(graphs: dict[str, object], path: str) -> dict[str, str]:
    """Write the network graph to ``path`` and a box-head graph next to it; returns {part: file}."""
    onnx = import_onnx()
    files = {NETWORK: path}
    if BOX_HEAD in graphs:
        files[BOX_HEAD] = box_head_path(path)
    for part, file in files.items():
        onnx.save(graphs[part], file)
    return files

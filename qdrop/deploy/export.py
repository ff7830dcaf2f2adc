"""Detector -> ONNX graphs: the network up to the heads' raw outputs, with every quantizer as QDQ.

A single-stage detector is one graph: ``img`` -> its dense head's raw outputs per level, ``cls_score_<l>``,
``bbox_pred_<l>`` and, for FCOS and ATSS, ``centerness_<l>`` (GFL's ``bbox_pred_<l>`` are the scaled bin logits; FCOS's
are the eval-mode distances). A two-stage detector has the network graph ``img`` -> FPN levels ``feat_<l>`` and the
RPN's ``rpn_cls_<l>``, ``rpn_reg_<l>``, and one graph per RoI head part; proposals, their NMS, RoI pooling and the
heads' post-processing run in between in the project's own code (`qdrop.deploy.runtime.OnnxDetector`).

Graphs and files, for ``--out FILE.onnx`` (`graph_path`):

* ``network`` -> ``FILE.onnx``: backbone, FPN, RPN.
* ``bbox_head`` -> ``FILE.bbox_head.onnx``: the box head (Faster R-CNN, Mask R-CNN), or the first stage's box head of
  Cascade R-CNN; later stages ``i`` are ``bbox_head<i>`` -> ``FILE.bbox_head<i>.onnx`` (``FILE.bbox_head1.onnx``,
  ``FILE.bbox_head2.onnx``). Each is ``roi_feats`` (N, C, 7, 7) -> ``cls_score`` (N, K + 1), ``bbox_pred`` (N, 4K
  or 4 when class-agnostic).
* ``mask_head`` -> ``FILE.mask_head.onnx`` (Mask R-CNN): ``mask_roi_feats`` (N, C, 14, 14) -> ``mask_pred`` (N, K,
  28, 28), the mask logits.
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
MASK_HEAD = "mask_head"
# A RoI head graph's input and outputs by kind of head.
BOX_HEAD_IO = ("roi_feats", ("cls_score", "bbox_pred"))
MASK_HEAD_IO = ("mask_roi_feats", ("mask_pred",))


def graph_path(network_path: str, part: str) -> str:
    """Where the graph ``part`` of a detector sits next to its network graph ``network_path`` (FILE.onnx ->
    FILE.onnx for the network, FILE.<part>.onnx for a head: FILE.bbox_head.onnx, FILE.bbox_head1.onnx,
    FILE.mask_head.onnx)."""
    if part == NETWORK:
        return network_path
    stem, ext = osp.splitext(network_path)
    return f"{stem}.{part}{ext or '.onnx'}"


def box_head_path(network_path: str) -> str:
    """Where the (first) box-head graph of a two-stage detector sits next to ``network_path`` (FILE.onnx ->
    FILE.bbox_head.onnx)."""
    return graph_path(network_path, BOX_HEAD)


def box_head_part(stage: int) -> str:
    """The graph name of stage ``stage``'s box head: ``bbox_head`` for the first (the only one outside Cascade
    R-CNN), ``bbox_head<stage>`` after it."""
    return BOX_HEAD if stage == 0 else f"{BOX_HEAD}{stage}"


def box_heads(roi_head: nn.Module) -> list[nn.Module]:
    """The RoI head's box heads in stage order (one, or Cascade R-CNN's ModuleList)."""
    heads = roi_head.bbox_head
    return list(heads) if isinstance(heads, nn.ModuleList) else [heads]


def box_roi_extractors(roi_head: nn.Module) -> list[nn.Module]:
    """The RoI extractor of each box head, in stage order."""
    extractors = roi_head.bbox_roi_extractor
    return list(extractors) if isinstance(extractors, nn.ModuleList) else [extractors]


def has_mask_head(model: nn.Module) -> bool:
    return is_two_stage(model) and bool(getattr(model.roi_head, "with_mask", False))


def head_graph_parts(model: nn.Module) -> list[str]:
    """The names of a detector's RoI head graphs, in the order they run: the box heads' (``bbox_head``,
    ``bbox_head1``, ...), then ``mask_head`` with a mask branch; none for a single-stage detector."""
    if not is_two_stage(model):
        return []
    parts = [box_head_part(stage) for stage in range(len(box_heads(model.roi_head)))]
    return parts + ([MASK_HEAD] if has_mask_head(model) else [])


def graph_parts(model: nn.Module) -> list[str]:
    """Every graph of the detector: ``network``, then `head_graph_parts`."""
    return [NETWORK] + head_graph_parts(model)


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
    """The detector's graphs as ONNX ModelProtos by part (`graph_parts`): {'network': ...} and, for two-stage
    detectors, one per RoI head part ('bbox_head', Cascade R-CNN's 'bbox_head1', 'bbox_head2', Mask R-CNN's
    'mask_head').

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
        for stage, head in enumerate(box_heads(model.roi_head)):
            graphs[box_head_part(stage)] = _box_head_graph(model, head, box_head_part(stage), opset)
        if has_mask_head(model):
            graphs[MASK_HEAD] = _mask_head_graph(model, opset)
    return graphs


def _box_head_graph(model: nn.Module, head: nn.Module, part: str, opset: int):
    onnx = import_onnx()
    graph = GraphBuilder(opset)
    writer = NetworkWriter(graph, model)
    input_name, output_names = BOX_HEAD_IO
    cls_score, bbox_pred = writer.box_head(head, input_name)
    outputs = [_rename(graph, tensor, name) for tensor, name in zip((cls_score, bbox_pred), output_names)]
    float_info = onnx.helper.make_tensor_value_info
    size = head.roi_feat_size
    roi_feats = float_info(input_name, onnx.TensorProto.FLOAT, ["num_rois", head.in_channels, size, size])
    return graph.model(
        [roi_feats],
        [float_info(o, onnx.TensorProto.FLOAT, [None, None]) for o in outputs],
        f"{type(model).__name__}_{part}",
    )


def _mask_head_graph(model: nn.Module, opset: int):
    onnx = import_onnx()
    head = model.roi_head.mask_head
    graph = GraphBuilder(opset)
    writer = NetworkWriter(graph, model)
    input_name, (output_name,) = MASK_HEAD_IO
    mask_pred = _rename(graph, writer.mask_head(head, input_name), output_name)
    float_info = onnx.helper.make_tensor_value_info
    height, width = head.roi_feat_size
    mask_feats = float_info(input_name, onnx.TensorProto.FLOAT, ["num_rois", head.in_channels, height, width])
    return graph.model(
        [mask_feats], [float_info(mask_pred, onnx.TensorProto.FLOAT, [None] * 4)], f"{type(model).__name__}_{MASK_HEAD}"
    )


def _rename(graph: GraphBuilder, tensor: str, output: str) -> str:
    """Expose ``tensor`` under the graph-output name ``output`` (an Identity node)."""
    return graph.node("Identity", [tensor], output)


def save_graphs(graphs: dict[str, object], path: str) -> dict[str, str]:
    """Write the network graph to ``path`` and every head graph next to it (`graph_path`); returns {part: file}."""
    onnx = import_onnx()
    files = {part: graph_path(path, part) for part in graphs}
    for part, file in files.items():
        onnx.save(graphs[part], file)
    return files

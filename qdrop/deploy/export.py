"""Detector -> ONNX graphs: the network up to the heads' raw outputs, with every quantizer as QDQ.

A single-stage detector is one graph: ``img`` -> ``cls_score_<l>``, ``bbox_pred_<l>`` per level. Faster R-CNN is two:
the network graph ``img`` -> FPN levels ``feat_<l>`` and the RPN's ``rpn_cls_<l>``, ``rpn_reg_<l>``, and the box-head
graph ``roi_feats`` (N, C, 7, 7) -> ``cls_score``, ``bbox_pred``; proposals, their NMS and RoI pooling run in
between in the project's own code.
"""

import os.path as osp
from collections.abc import Sequence
from typing import Optional

from torch import nn

from mmdet.models import build_detector
from mmdet.utils import CheckpointMismatchError, fuse_conv_bn, load_checkpoint, load_config
from qdrop.model import is_quantized_checkpoint_file, load_quantized_checkpoint

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


def load_detector(config_path: str, checkpoint_path: str, require_quantized: bool = False) -> tuple[nn.Module, bool]:
    """The detector of ``config_path`` with ``checkpoint_path`` loaded and BatchNorm folded, in eval mode.

    Returns:
        (model, whether the checkpoint is a quantized one).

    Raises:
        ValueError: a float checkpoint with ``require_quantized``, or a checkpoint that does not fit the config.
    """
    cfg = load_config(config_path)
    model = build_detector(cfg.model, test_cfg=cfg.get("test_cfg"))
    quantized = is_quantized_checkpoint_file(checkpoint_path)
    if require_quantized and not quantized:
        raise ValueError(
            f"{checkpoint_path} is a float checkpoint, but a quantized one (quantized.pth written by "
            "qdrop/solver/quant_coco.py) is required; drop --require-quantized for a float export"
        )
    try:
        if quantized:
            load_quantized_checkpoint(model, checkpoint_path)
        else:
            load_checkpoint(model, checkpoint_path, map_location="cpu")
            fuse_conv_bn(model)
    except (ValueError, KeyError, RuntimeError, CheckpointMismatchError) as err:
        raise ValueError(f"{checkpoint_path} does not fit the model of {config_path}: {err}") from err
    return model.eval(), quantized


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
        cls_scores, bbox_preds = writer.dense_head(model.bbox_head, feats)
        named = [(f"cls_score_{i}", t) for i, t in enumerate(cls_scores)] + [
            (f"bbox_pred_{i}", t) for i, t in enumerate(bbox_preds)
        ]
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

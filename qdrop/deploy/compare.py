"""The exported graphs against the PyTorch detector on the same input: the largest difference of every raw output,
in absolute terms and in steps of the last activation quantizer, and where the two first part ways."""

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from mmdet.core import bbox2roi
from qdrop.quantization import fake_quantizers
from qdrop.quantization.functional import broadcast_qparam

from .dependencies import import_onnx
from .export import (
    BOX_HEAD,
    BOX_HEAD_IO,
    MASK_HEAD,
    MASK_HEAD_IO,
    box_head_part,
    box_heads,
    box_roi_extractors,
    dense_output_kinds,
    has_mask_head,
    is_two_stage,
)
from .runtime import OnnxDetector, create_session

# An element counts as sitting on a rounding tie when PyTorch's x / scale lies this close (in steps) to k + 1/2:
# float32 sums taken in another order move a conv output by far less, an export error by far more.
TIE_TOLERANCE = 1e-4
_DEQUANTIZE_NAME = re.compile(r"(?P<quantizer>.*)/dequantize(?:_(?P<call>\d+))?")


@dataclass(frozen=True)
class OutputDifference:
    """max |ONNX - PyTorch| of one graph output, the largest |PyTorch| value for scale, and how many of its
    ``elements`` differ by more than ``step``."""

    name: str
    max_abs_diff: float
    max_abs_value: float
    over_step: int
    elements: int


def last_activation_quantizer(model: nn.Module) -> Optional[tuple[str, float]]:
    """(name, largest scale) of the last enabled activation quantizer in registration order, or None when the model
    has none (a float model)."""
    enabled = [(name, q) for name, q in fake_quantizers(model, "activation") if q.fake_quant_enabled]
    if not enabled:
        return None
    name, quantizer = enabled[-1]
    return name, float(quantizer.scale.detach().abs().max())


def network_outputs(model: nn.Module, img: torch.Tensor) -> dict[str, torch.Tensor]:
    """The PyTorch detector's values of the network graph's outputs for a (B, 3, H, W) batch, by output name."""
    with torch.no_grad():
        feats = model.extract_feat(img)
        if is_two_stage(model):
            cls_scores, bbox_preds = model.rpn_head(feats)
            named = {f"feat_{i}": f for i, f in enumerate(feats)}
            named.update({f"rpn_cls_{i}": s for i, s in enumerate(cls_scores)})
            named.update({f"rpn_reg_{i}": r for i, r in enumerate(bbox_preds)})
            return named
        head_outputs = model.bbox_head(feats)
        kinds = dense_output_kinds(model.bbox_head)
        return {f"{kind}_{i}": t for kind, levels in zip(kinds, head_outputs) for i, t in enumerate(levels)}


def compare_outputs(
    model: nn.Module, detector: OnnxDetector, img: torch.Tensor, img_metas: list[dict], step: float = 0.0
) -> list[OutputDifference]:
    """Every network-graph output and, for a two-stage detector, every head graph's outputs on the RoI features of
    the PyTorch model's own proposals, against the PyTorch model.

    The head graphs' outputs are named as in the graphs for the (first) box head (``cls_score``, ``bbox_pred``) and
    ``<part>/<output>`` for the others (Cascade R-CNN's ``bbox_head1/cls_score``, Mask R-CNN's
    ``mask_head/mask_pred``). Every stage of Cascade R-CNN sees the same proposals, pooled by its own extractor.

    Args:
        model: the PyTorch detector (quantized or float, BatchNorm folded, on the CPU, eval mode).
        detector: its exported graphs in ONNX Runtime.
        img: (B, 3, H, W) input batch.
        img_metas: the batch's image metas (proposal post-processing of a two-stage detector needs them).
        step: differences above it are counted (e.g. the last activation quantizer's scale).

    Returns:
        One OutputDifference per compared output, network outputs first.
    """
    expected = network_outputs(model, img)
    got = detector.raw_outputs(img)
    missing = sorted(set(expected) - set(got))
    if missing:
        raise ValueError(f"the network graph lacks outputs {missing}; it has {sorted(got)}")
    differences = [_difference(name, got[name], expected[name], step) for name in expected]
    if is_two_stage(model):
        differences += _head_differences(model, detector, expected, img, img_metas, step)
    return differences


def _head_differences(
    model: nn.Module,
    detector: OnnxDetector,
    expected: dict[str, torch.Tensor],
    img: torch.Tensor,
    img_metas: list[dict],
    step: float,
) -> list[OutputDifference]:
    model.set_batch_input_shape(img, img_metas)
    levels = len(model.rpn_head.prior_generator.strides)
    roi_head = model.roi_head
    with torch.no_grad():
        proposals = model.rpn_head.get_bboxes(
            [expected[f"rpn_cls_{i}"] for i in range(levels)],
            [expected[f"rpn_reg_{i}"] for i in range(levels)],
            img_metas,
        )
    rois = bbox2roi(proposals)
    feats = [expected[f"feat_{i}"] for i in range(model.neck.num_outs)]
    heads = [
        (box_head_part(stage), extractor, head, BOX_HEAD_IO)
        for stage, (extractor, head) in enumerate(zip(box_roi_extractors(roi_head), box_heads(roi_head)))
    ]
    if has_mask_head(model):
        heads.append((MASK_HEAD, roi_head.mask_roi_extractor, roi_head.mask_head, MASK_HEAD_IO))
    differences = []
    for part, extractor, head, (_, output_names) in heads:
        with torch.no_grad():
            roi_feats = extractor(feats[: extractor.num_inputs], rois)  # (N, C, 7, 7); masks: (N, C, 14, 14)
            want = head(roi_feats)
        want = want if isinstance(want, tuple) else (want,)
        got = detector.head_outputs(part, roi_feats)
        prefix = "" if part == BOX_HEAD else f"{part}/"
        differences += [_difference(prefix + name, g, w, step) for name, g, w in zip(output_names, got, want)]
    return differences


def _difference(name: str, got: torch.Tensor, want: torch.Tensor, step: float) -> OutputDifference:
    if tuple(got.shape) != tuple(want.shape):
        raise ValueError(f"output {name}: ONNX shape {tuple(got.shape)}, PyTorch shape {tuple(want.shape)}")
    diff = (got.float() - want.float()).abs()
    return OutputDifference(
        name,
        float(diff.max()) if diff.numel() else 0.0,
        float(want.abs().max()) if want.numel() else 0.0,
        int((diff > step).sum()),
        diff.numel(),
    )


@dataclass(frozen=True)
class Divergence:
    """The first activation quantizer, in graph order, whose ONNX output differs from PyTorch's by a level or more
    while every quantizer before it agrees.

    ``elements`` of its ``total`` outputs land on another level; ``tie_distance`` is the largest distance, in steps,
    of PyTorch's ``x / scale`` from a rounding tie k + 1/2 among them. ``call`` counts earlier calls of a quantizer
    shared by several inputs (a head run on every FPN level).
    """

    quantizer: str
    call: int
    elements: int
    total: int
    tie_distance: float

    @property
    def at_rounding_ties(self) -> bool:
        """True when every split element sat on a rounding tie: float summation order, not the export, parted them."""
        return self.tie_distance <= TIE_TOLERANCE

    def describe(self) -> str:
        where = self.quantizer if self.call == 0 else f"{self.quantizer} (call {self.call})"
        cause = (
            f"all within {self.tie_distance:.1e} step of a rounding tie: float summation order"
            if self.at_rounding_ties
            else f"up to {self.tie_distance:.3f} step from a rounding tie: the graph computes something else"
        )
        return f"first divergence at {where}: {self.elements} of {self.total} elements on another level, {cause}"


def distance_to_tie(x: Tensor, scale: Tensor, ch_axis: int) -> Tensor:
    """|frac(x / scale) - 1/2|: how far, in steps, each element lies from a rounding tie (0 on a tie, 1/2 on a
    level). ``scale`` is (1,) or (C,) along ``ch_axis``."""
    t = x / broadcast_qparam(scale.detach(), x, ch_axis)
    return (t - torch.floor(t) - 0.5).abs()


class QuantizerProbe:
    """The network graph with the output of every activation quantizer's DequantizeLinear exposed, in one ONNX Runtime
    session, to find where graph and PyTorch detector part ways on any number of inputs.

    Args:
        network_graph: the exported network graph (ModelProto); it is copied, not changed.
        optimization, threads: the ONNX Runtime session's settings.
    """

    def __init__(self, network_graph, optimization: str = "disable", threads: int = 1):
        onnx = import_onnx()
        graph = onnx.ModelProto()
        graph.CopyFrom(network_graph)
        producers = {output: node.op_type for node in graph.graph.node for output in node.output}
        self.exposed: list[tuple[str, str, int]] = []  # (graph value, quantizer name, call index) in graph order
        for node in graph.graph.node:
            match = _DEQUANTIZE_NAME.fullmatch(node.output[0])
            if node.op_type == "DequantizeLinear" and match and producers.get(node.input[0]) == "QuantizeLinear":
                self.exposed.append((node.output[0], match["quantizer"], int(match["call"] or 0)))
                value_info = onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
                graph.graph.output.append(value_info)
        self.session = create_session(graph, optimization, threads)

    def first_divergence(self, model: nn.Module, img: Tensor) -> Optional[Divergence]:
        """Where the graph and ``model`` first part ways on ``img``, or None when every activation quantizer agrees.

        Args:
            model: the quantized PyTorch detector the graph was exported from (BatchNorm folded, CPU, eval mode).
            img: (B, 3, H, W) input batch.
        """
        names = [value for value, _, _ in self.exposed]
        got = dict(zip(names, self.session.run(names, {"img": np.ascontiguousarray(img.numpy(), dtype=np.float32)})))
        quantizers = dict(fake_quantizers(model, "activation"))
        calls: dict[str, list[tuple[Tensor, Tensor]]] = defaultdict(list)

        def record(name):
            def hook(module, inputs, output):
                calls[name].append((inputs[0].detach(), output.detach()))

            return hook

        handles = [quantizer.register_forward_hook(record(name)) for name, quantizer in quantizers.items()]
        try:
            network_outputs(model, img)
        finally:
            for handle in handles:
                handle.remove()
        for value, name, call in self.exposed:
            if name not in quantizers or call >= len(calls[name]):
                raise ValueError(f"graph value {value}: the PyTorch model has no call {call} of quantizer {name}")
            quantizer = quantizers[name]
            x, want = calls[name][call]
            half_step = 0.5 * broadcast_qparam(quantizer.scale.detach(), want, quantizer.ch_axis)
            split = (torch.from_numpy(got[value]) - want).abs() > half_step
            if split.any():
                ties = distance_to_tie(x, quantizer.scale, quantizer.ch_axis)[split]
                return Divergence(name, call, int(split.sum()), split.numel(), float(ties.max()))
        return None

"""A detector whose network runs in ONNX Runtime and whose pre- and post-processing are the project's own."""

import copy
import itertools
import os.path as osp
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import nn

from mmdet.core import bbox2result
from mmdet.utils.errors import UserError

from .dependencies import import_onnx, import_onnxruntime
from .export import (
    BOX_HEAD,
    BOX_HEAD_IO,
    MASK_HEAD,
    MASK_HEAD_IO,
    NETWORK,
    box_head_part,
    dense_output_kinds,
    export_detector,
    graph_parts,
    graph_path,
    is_two_stage,
    network_output_names,
)

OPTIMIZATION_LEVELS = ("all", "extended", "basic", "disable")
PROVIDERS = ["CPUExecutionProvider"]
BIAS_QUANTIZATION = "WeightBiasQuantization"  # ONNX Runtime's rewrite of float conv biases to int32


def session_options(optimization: str = "all", threads: int = 0, optimized_model_path: Optional[str] = None):
    """ORT SessionOptions with a graph optimization level ('all': 8-bit QDQ fused into integer kernels; 'disable':
    every node as written) and an intra-op thread count (0: ORT's default)."""
    ort = import_onnxruntime()
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization: got {optimization!r}; allowed values: {', '.join(OPTIMIZATION_LEVELS)}")
    levels = {
        "all": "ORT_ENABLE_ALL",
        "extended": "ORT_ENABLE_EXTENDED",
        "basic": "ORT_ENABLE_BASIC",
        "disable": "ORT_DISABLE_ALL",
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, levels[optimization])
    options.intra_op_num_threads = threads
    if optimized_model_path:
        options.optimized_model_filepath = optimized_model_path
    return options


def create_session(model, optimization: str = "all", threads: int = 0, optimized_model_path: Optional[str] = None):
    """An ONNX Runtime CPU session from a file path or a ModelProto; with ``optimized_model_path`` ONNX Runtime also
    writes the graph it runs there.

    A graph holding 4-bit tensors keeps its float conv biases under every optimization level (see
    ``disabled_optimizers``), so that optimized sessions compute what the fake-quantized model computes.
    """
    ort = import_onnxruntime()
    proto = import_onnx().load(model) if isinstance(model, str) else model
    return ort.InferenceSession(
        proto.SerializeToString(),
        session_options(optimization, threads, optimized_model_path),
        providers=PROVIDERS,
        disabled_optimizers=disabled_optimizers(proto),
    )


def disabled_optimizers(model_proto) -> list[str]:
    """The ONNX Runtime graph rewrites turned off for ``model_proto``.

    ONNX Runtime quantizes each float conv bias to int32 (scale: input scale x weight scale) so that
    DequantizeLinear -> Conv -> QuantizeLinear groups fuse into integer kernels (QLinearConv). Only 8-bit groups fuse;
    in a graph with 4-bit tensors the convs stay float and the rounded biases only shift every conv output by up to
    half a product step, which moves values across the next quantizer's rounding boundaries. Such graphs keep their
    float biases; 8-bit graphs keep ONNX Runtime's default so that they run on integer kernels.
    """
    onnx = import_onnx()
    four_bit = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    if any(tensor.data_type in four_bit for tensor in model_proto.graph.initializer):
        return [BIAS_QUANTIZATION]
    return []


class OnnxGraphError(UserError, ValueError):
    """An ONNX file is missing or does not fit the detector of the config."""


def run_head_graph(session, io: tuple[str, Sequence[str]], feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A RoI head graph's outputs (CPU tensors, in the order of ``io[1]``) for pooled RoI features ``feats``."""
    input_name, output_names = io
    values = session.run(
        list(output_names), {input_name: np.ascontiguousarray(feats.detach().cpu().numpy(), dtype=np.float32)}
    )
    return tuple(torch.from_numpy(value) for value in values)


class GraphHead(nn.Module):
    """A RoI head part (a box head or the mask head) whose forward runs its ONNX graph; its other attributes and
    methods (``get_bboxes``, ``regress_by_class``, ``get_seg_masks``, ``num_classes``, ...) are the PyTorch head's.

    Args:
        head: the PyTorch head (kept, not changed).
        session: the ONNX Runtime session of its graph.
        io: (the graph's input name, its output names in the order of the head's forward).
    """

    def __init__(self, head: nn.Module, session, io: tuple[str, Sequence[str]]):
        super().__init__()
        self.head = head
        self.session = session
        self.input_name, self.output_names = io[0], list(io[1])

    def forward(self, feats: torch.Tensor):
        """The graph's outputs for the pooled RoI features, as CPU tensors: one tensor, or a tuple of them."""
        outputs = run_head_graph(self.session, (self.input_name, self.output_names), feats)
        return outputs[0] if len(outputs) == 1 else outputs

    def __getattr__(self, name: str):
        # nn.Module's lookup (parameters, buffers, sub-modules) first, then the PyTorch head's attributes; the head is
        # read from _modules directly so that a lookup before __init__ has registered it cannot recurse.
        try:
            return super().__getattr__(name)
        except AttributeError:
            head = self.__dict__.get("_modules", {}).get("head")
            if head is None:
                raise
            return getattr(head, name)


def roi_head_on_graphs(roi_head: nn.Module, sessions: dict[str, object]) -> nn.Module:
    """A copy of ``roi_head`` whose box heads (every Cascade R-CNN stage) and mask head run their graphs
    (`GraphHead`), so that the RoI head's own test code (proposal pooling, Cascade R-CNN's refinement between stages
    and score averaging, the mask branch and its pasting) runs unchanged around them.

    The copy shares every parameter and buffer with ``roi_head``; ``roi_head`` itself is not changed.

    Args:
        roi_head: a StandardRoIHead (with or without a mask head) or CascadeRoIHead.
        sessions: the head graphs' sessions by part (``bbox_head``, ``bbox_head1``, ..., ``mask_head``).
    """
    # A deep copy whose memo maps every tensor to itself: new modules (so the heads can be swapped in the copy's own
    # containers), the same weights.
    shared = {id(tensor): tensor for tensor in itertools.chain(roi_head.parameters(), roi_head.buffers())}
    view = copy.deepcopy(roi_head, shared)
    if isinstance(view.bbox_head, nn.ModuleList):
        for stage, head in enumerate(view.bbox_head):
            view.bbox_head[stage] = GraphHead(head, sessions[box_head_part(stage)], BOX_HEAD_IO)
    else:
        view.bbox_head = GraphHead(view.bbox_head, sessions[BOX_HEAD], BOX_HEAD_IO)
    if getattr(view, "with_mask", False):
        view.mask_head = GraphHead(view.mask_head, sessions[MASK_HEAD], MASK_HEAD_IO)
    return view


class OnnxDetector(nn.Module):
    """The detector ``model`` (built from the same config) with its network replaced by ONNX Runtime sessions.

    Called like a detector in test mode (``model(img=..., img_metas=..., return_loss=False, rescale=True)``):
    the network graph gives the heads' raw outputs, then the heads' own ``get_bboxes`` (priors, decoding, NMS; with
    FCOS's and ATSS's centerness as the third list). For two-stage detectors the RPN's proposals come from the
    network graph's outputs and the RoI head's own ``simple_test`` runs with its heads on their graphs
    (`roi_head_on_graphs`): RoI pooling, Cascade R-CNN's refinement between stages and score averaging, Mask R-CNN's
    mask RoI pooling and pasting run in PyTorch between the graphs, and Mask R-CNN returns ``(bbox_results,
    segm_results)`` per image as the PyTorch detector does.

    Args:
        model: the PyTorch detector; only its heads' post-processing and the RoI extractors are used.
        sessions: one per graph of `qdrop.deploy.export.graph_parts`: {'network': session} and, for two-stage
            detectors, 'bbox_head' (Cascade R-CNN: also 'bbox_head1', 'bbox_head2', ...) and Mask R-CNN's
            'mask_head'.
    """

    def __init__(self, model: nn.Module, sessions: dict[str, object]):
        super().__init__()
        self.detector = model.eval()
        self.sessions = dict(sessions)
        expected = set(graph_parts(model))
        if set(self.sessions) != expected:
            raise ValueError(
                f"{type(model).__name__} needs ONNX graphs {sorted(expected)}, got {sorted(self.sessions)}"
            )
        self.graph_roi_head = roi_head_on_graphs(model.roi_head, self.sessions) if is_two_stage(model) else None

    @classmethod
    def from_file(cls, model: nn.Module, onnx_path: str, optimization: str = "all", threads: int = 0) -> "OnnxDetector":
        """Sessions for ``onnx_path`` and, for two-stage detectors, its head graphs next to it (FILE.bbox_head.onnx;
        Cascade R-CNN's FILE.bbox_head1.onnx, ...; Mask R-CNN's FILE.mask_head.onnx)."""
        files = {part: graph_path(onnx_path, part) for part in graph_parts(model)}
        for path in files.values():
            if not osp.isfile(path):
                raise OnnxGraphError(f"{path}: no such ONNX file (write it with tools/deploy/export_onnx.py)")
        return cls(model, {part: create_session(path, optimization, threads) for part, path in files.items()})

    @classmethod
    def from_model(cls, model: nn.Module, optimization: str = "all", threads: int = 0) -> "OnnxDetector":
        """Export ``model`` (a float or calibrated quantized detector, BatchNorm folded) in memory and run its graphs;
        a CPU copy of ``model`` does the post-processing."""
        model = copy.deepcopy(model).cpu().eval()
        graphs = export_detector(model)
        return cls(model, {part: create_session(graph, optimization, threads) for part, graph in graphs.items()})

    def check_fits(self, config_path: str, onnx_path: str) -> None:
        """The network graph's outputs must be the ones the config's detector post-processes
        (`network_output_names`: e.g. ``centerness_<l>`` too for FCOS and ATSS).

        Raises:
            OnnxGraphError: naming both files and the outputs expected and found.
        """
        names = {output.name for output in self.sessions[NETWORK].get_outputs()}
        expected = set(network_output_names(self.detector))
        if names != expected:
            missing, extra = sorted(expected - names), sorted(names - expected)
            raise OnnxGraphError(
                f"{onnx_path} does not fit the detector of {config_path}: graph outputs {sorted(names)}, "
                f"expected {sorted(expected)} (missing {missing}, unexpected {extra})"
            )

    def raw_outputs(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network graph's outputs by name for a (B, 3, H, W) batch."""
        session = self.sessions[NETWORK]
        names = [output.name for output in session.get_outputs()]
        values = session.run(names, {"img": np.ascontiguousarray(img.detach().cpu().numpy(), dtype=np.float32)})
        return {name: torch.from_numpy(value) for name, value in zip(names, values)}

    def head_outputs(self, part: str, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs of the head graph ``part`` for pooled RoI features: a box head's (cls_score (N, K + 1),
        bbox_pred (N, 4K) or (N, 4)) for (N, C, 7, 7) features, the mask head's (mask_pred (N, K, 28, 28),) for
        (N, C, 14, 14) ones."""
        return run_head_graph(self.sessions[part], MASK_HEAD_IO if part == MASK_HEAD else BOX_HEAD_IO, feats)

    def box_head_outputs(self, roi_feats: torch.Tensor):
        """(cls_score (N, K + 1), bbox_pred (N, 4K)) of the (first) box-head graph for (N, C, 7, 7) RoI features."""
        return self.head_outputs(BOX_HEAD, roi_feats)

    def forward(self, img, img_metas, return_loss: bool = False, rescale: bool = False):
        if return_loss:
            raise ValueError("OnnxDetector runs inference only (return_loss=False)")
        if isinstance(img, (list, tuple)):
            if len(img) != 1:
                raise NotImplementedError(f"test-time augmentation is not supported (got {len(img)} augmented inputs)")
            img, img_metas = img[0], img_metas[0]
        self.detector.set_batch_input_shape(img, img_metas)
        outputs = self.raw_outputs(img)
        if is_two_stage(self.detector):
            return self._two_stage(outputs, img_metas, rescale)
        head = self.detector.bbox_head
        per_kind = [_levels(outputs, f"{kind}_") for kind in dense_output_kinds(head)]
        results = head.get_bboxes(*per_kind, img_metas=img_metas, rescale=rescale)
        return [bbox2result(bboxes, labels, head.num_classes) for bboxes, labels in results]

    def _two_stage(self, outputs: dict[str, torch.Tensor], img_metas: list[dict], rescale: bool) -> list:
        """The RPN's proposals from the network graph's outputs, then the RoI head's test path on the graphs."""
        proposals = self.detector.rpn_head.get_bboxes(
            _levels(outputs, "rpn_cls_"), _levels(outputs, "rpn_reg_"), img_metas
        )
        return self.graph_roi_head.simple_test(_levels(outputs, "feat_"), proposals, img_metas, rescale=rescale)


def _levels(outputs: dict[str, torch.Tensor], prefix: str) -> list[torch.Tensor]:
    """The outputs named ``<prefix><level>`` in level order."""
    names = sorted((name for name in outputs if name.startswith(prefix)), key=lambda name: int(name[len(prefix) :]))
    return [outputs[name] for name in names]

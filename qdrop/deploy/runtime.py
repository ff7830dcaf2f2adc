"""A detector whose network runs in ONNX Runtime and whose pre- and post-processing are the project's own."""

import copy
import os.path as osp
from typing import Optional

import numpy as np
import torch
from torch import nn

from mmdet.core import bbox2result, bbox2roi
from mmdet.utils.errors import UserError

from .dependencies import import_onnx, import_onnxruntime
from .export import (
    BOX_HEAD,
    NETWORK,
    box_head_path,
    dense_output_kinds,
    export_detector,
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


class OnnxDetector(nn.Module):
    """The detector ``model`` (built from the same config) with its network replaced by ONNX Runtime sessions.

    Called like a detector in test mode (``model(img=..., img_metas=..., return_loss=False, rescale=True)``):
    the network graph gives the heads' raw outputs, then the heads' own ``get_bboxes`` (priors, decoding, NMS; with
    FCOS's and ATSS's centerness as the third list);
    for Faster R-CNN, proposals and RoI pooling run in PyTorch between the network and box-head graphs.

    Args:
        model: the PyTorch detector; only its heads' post-processing and the RoI extractor are used.
        sessions: {'network': session} and, for two-stage detectors, {'bbox_head': session}.
    """

    def __init__(self, model: nn.Module, sessions: dict[str, object]):
        super().__init__()
        self.detector = model.eval()
        self.sessions = dict(sessions)
        expected = {NETWORK, BOX_HEAD} if is_two_stage(model) else {NETWORK}
        if set(self.sessions) != expected:
            raise ValueError(
                f"{type(model).__name__} needs ONNX graphs {sorted(expected)}, got {sorted(self.sessions)}"
            )

    @classmethod
    def from_file(cls, model: nn.Module, onnx_path: str, optimization: str = "all", threads: int = 0) -> "OnnxDetector":
        """Sessions for ``onnx_path`` (and its box-head graph FILE.bbox_head.onnx for two-stage detectors)."""
        files = {NETWORK: onnx_path}
        if is_two_stage(model):
            files[BOX_HEAD] = box_head_path(onnx_path)
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

    def box_head_outputs(self, roi_feats: torch.Tensor):
        """(cls_score (N, K + 1), bbox_pred (N, 4K)) of the box-head graph for (N, C, 7, 7) RoI features."""
        cls_score, bbox_pred = self.sessions[BOX_HEAD].run(
            ["cls_score", "bbox_pred"], {"roi_feats": np.ascontiguousarray(roi_feats.numpy(), dtype=np.float32)}
        )
        return torch.from_numpy(cls_score), torch.from_numpy(bbox_pred)

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
        detector = self.detector
        roi_head = detector.roi_head
        proposals = detector.rpn_head.get_bboxes(_levels(outputs, "rpn_cls_"), _levels(outputs, "rpn_reg_"), img_metas)
        feats = _levels(outputs, "feat_")
        rois = bbox2roi(proposals)  # (N, 5): image index, x1, y1, x2, y2
        num_classes = roi_head.num_classes
        if rois.size(0) == 0:
            return [
                bbox2result(rois.new_zeros((0, 5)), rois.new_zeros((0,), dtype=torch.long), num_classes)
                for _ in img_metas
            ]
        roi_feats = roi_head.bbox_roi_extractor(feats[: roi_head.bbox_roi_extractor.num_inputs], rois)
        cls_score, bbox_pred = self.box_head_outputs(roi_feats)
        counts = [p.size(0) for p in proposals]
        results = []
        for meta, img_rois, img_scores, img_deltas in zip(
            img_metas, rois.split(counts), cls_score.split(counts), bbox_pred.split(counts)
        ):
            if img_rois.size(0) == 0:
                bboxes, labels = rois.new_zeros((0, 5)), rois.new_zeros((0,), dtype=torch.long)
            else:
                bboxes, labels = roi_head.bbox_head.get_bboxes(
                    img_rois,
                    img_scores,
                    img_deltas,
                    meta["img_shape"],
                    meta["scale_factor"],
                    rescale=rescale,
                    cfg=roi_head.test_cfg,
                )
            results.append(bbox2result(bboxes, labels, num_classes))
        return results


def _levels(outputs: dict[str, torch.Tensor], prefix: str) -> list[torch.Tensor]:
    """The outputs named ``<prefix><level>`` in level order."""
    names = sorted((name for name in outputs if name.startswith(prefix)), key=lambda name: int(name[len(prefix) :]))
    return [outputs[name] for name in names]

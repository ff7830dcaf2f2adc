"""The exported graphs against the PyTorch detector on the same input: the largest difference of every raw output,
in absolute terms and in steps of the last activation quantizer."""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from mmdet.core import bbox2roi
from qdrop.quantization import fake_quantizers

from .export import is_two_stage
from .runtime import OnnxDetector


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
        cls_scores, bbox_preds = model.bbox_head(feats)
        named = {f"cls_score_{i}": s for i, s in enumerate(cls_scores)}
        named.update({f"bbox_pred_{i}": r for i, r in enumerate(bbox_preds)})
        return named


def compare_outputs(
    model: nn.Module, detector: OnnxDetector, img: torch.Tensor, img_metas: list[dict], step: float = 0.0
) -> list[OutputDifference]:
    """Every network-graph output and, for a two-stage detector, the box-head graph's outputs on the PyTorch
    model's own proposals, against the PyTorch model.

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
        differences += _box_head_differences(model, detector, expected, img, img_metas, step)
    return differences


def _box_head_differences(
    model: nn.Module,
    detector: OnnxDetector,
    expected: dict[str, torch.Tensor],
    img: torch.Tensor,
    img_metas: list[dict],
    step: float,
) -> list[OutputDifference]:
    model.set_batch_input_shape(img, img_metas)
    levels = len(model.rpn_head.prior_generator.strides)
    with torch.no_grad():
        proposals = model.rpn_head.get_bboxes(
            [expected[f"rpn_cls_{i}"] for i in range(levels)],
            [expected[f"rpn_reg_{i}"] for i in range(levels)],
            img_metas,
        )
        extractor = model.roi_head.bbox_roi_extractor
        feats = [expected[f"feat_{i}"] for i in range(extractor.num_inputs)]
        roi_feats = extractor(feats, bbox2roi(proposals))  # (N, C, 7, 7)
        cls_score, bbox_pred = model.roi_head.bbox_head(roi_feats)
    got_cls, got_reg = detector.box_head_outputs(roi_feats)
    return [_difference("cls_score", got_cls, cls_score, step), _difference("bbox_pred", got_reg, bbox_pred, step)]


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

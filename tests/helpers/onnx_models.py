"""Tiny quantized detectors for the ONNX deployment tests (tests/test_qdrop/test_deploy/)."""

import torch

from helpers.qdrop_models import faster_rcnn_cfg, fused_detector, q_config, random_batches, retinanet_cfg
from qdrop.model import quantize_detector
from qdrop.quantization import enable_calibration, enable_quantization, weight_quantized_layers

DETECTORS = {"retinanet": lambda: retinanet_cfg(18), "faster_rcnn": lambda: faster_rcnn_cfg(50)}


def quantized_detector(name: str, w_bit: int, a_bit: int = 4) -> torch.nn.Module:
    """A tiny detector calibrated on random images, with AdaRound's rounding learned as a random hard choice."""
    model = fused_detector(DETECTORS[name]())
    quantize_detector(model, q_config(w_bit=w_bit, a_bit=a_bit))
    enable_calibration(model)
    with torch.no_grad():
        for batch in random_batches(num_batches=1):
            model.extract_feat(batch["img"])
    generator = torch.Generator().manual_seed(1)
    for layer, quantizer in weight_quantized_layers(model):
        quantizer.init(layer.weight)
        quantizer.alpha.data = torch.randn(quantizer.alpha.shape, generator=generator)
        quantizer.soft_targets = False
    enable_quantization(model)
    return model.eval()


def torch_outputs(model: torch.nn.Module, img: torch.Tensor) -> list:
    """The network graph's outputs, in its order, from the PyTorch model."""
    with torch.no_grad():
        feats = model.extract_feat(img)
        if getattr(model, "roi_head", None) is not None:
            cls_scores, bbox_preds = model.rpn_head(feats)
            return list(feats) + list(cls_scores) + list(bbox_preds)
        cls_scores, bbox_preds = model.bbox_head(feats)
        return list(cls_scores) + list(bbox_preds)

"""Tiny quantized detectors for the ONNX deployment tests (tests/test_qdrop/test_deploy/)."""

import torch

from helpers.qdrop_models import (
    atss_cfg,
    cascade_rcnn_cfg,
    faster_rcnn_cfg,
    fcos_cfg,
    fused_detector,
    gfl_cfg,
    image_meta,
    mask_rcnn_cfg,
    q_config,
    random_batches,
    regnet_backbone_cfg,
    resnext_backbone_cfg,
    retinanet_cfg,
    with_backbone,
)
from qdrop.deploy.compare import network_outputs
from qdrop.deploy.export import is_two_stage
from qdrop.model import quantize_detector
from qdrop.quantization import enable_calibration, enable_quantization, weight_quantized_layers

DETECTORS = {"retinanet": lambda: retinanet_cfg(18), "faster_rcnn": lambda: faster_rcnn_cfg(50)}


def _keeping_low_scores(model_cfg: dict) -> dict:
    """The random-init heads score about their prior 0.01: a lower threshold keeps detections to compare."""
    model_cfg["test_cfg"]["score_thr"] = 0.005
    return model_cfg


# The one-stage family with GroupNorm towers (FCOS with and without norm_on_bbox), and RetinaNets on the ResNeXt and
# RegNet backbones.
ONE_STAGE = {
    "fcos": lambda: _keeping_low_scores(fcos_cfg()),
    "fcos_exp": lambda: _keeping_low_scores(fcos_cfg(norm_on_bbox=False)),
    "atss": lambda: _keeping_low_scores(atss_cfg()),
    "gfl": lambda: _keeping_low_scores(gfl_cfg()),
}
BACKBONES = {
    "resnext": lambda: with_backbone(retinanet_cfg(18), resnext_backbone_cfg()),
    "regnet": lambda: with_backbone(retinanet_cfg(18), regnet_backbone_cfg()),
}
# Two-stage detectors with more than one RoI head graph: Cascade R-CNN's three box-head stages, Mask R-CNN's mask head.
TWO_STAGE = {"cascade_rcnn": lambda: cascade_rcnn_cfg(50), "mask_rcnn": lambda: mask_rcnn_cfg(50)}
MODEL_CFGS = {**DETECTORS, **ONE_STAGE, **BACKBONES, **TWO_STAGE}


def quantized_detector(name: str, w_bit: int, a_bit: int = 4, quant_head: bool = False) -> torch.nn.Module:
    """A tiny detector calibrated on random images, with AdaRound's rounding learned as a random hard choice.

    With `quant_head` the activation quantizers of a single-stage detector's head observe the head's forward too;
    those of a two-stage detector's heads (RPN, box heads, mask head) observe the whole test forward.
    """
    model = fused_detector(MODEL_CFGS[name]())
    quantize_detector(model, q_config(w_bit=w_bit, a_bit=a_bit, quant_head=quant_head))
    enable_calibration(model)
    with torch.no_grad():
        for batch in random_batches(num_batches=1):
            img = batch["img"]
            if quant_head and is_two_stage(model):
                model.simple_test(img, [image_meta(img.shape[2], img.shape[3])] * img.shape[0])
            elif quant_head:
                network_outputs(model, img)
            else:
                model.extract_feat(img)
    generator = torch.Generator().manual_seed(1)
    for layer, quantizer in weight_quantized_layers(model):
        quantizer.init(layer.weight)
        quantizer.alpha.data = torch.randn(quantizer.alpha.shape, generator=generator)
        quantizer.soft_targets = False
    enable_quantization(model)
    return model.eval()


def float_detector(name: str) -> torch.nn.Module:
    """The same tiny detector in float (BatchNorm folded)."""
    return fused_detector(MODEL_CFGS[name]()).eval()


def torch_outputs(model: torch.nn.Module, img: torch.Tensor) -> list:
    """The network graph's outputs, in its order, from the PyTorch model."""
    return list(network_outputs(model, img).values())

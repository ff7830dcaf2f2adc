"""Peak memory of the reconstruction cache (quantized input, float input, float output of one unit for every
calibration image of a process).

1. Computed from shapes for the COCO run of exp/config.yaml: Faster R-CNN R50-FPN at 800x1333 (padded to 800x1344), 256
   calibration images over 8 processes, drop_prob 0.5 (float input kept too), float32 on the GPU (keep_gpu: True);
   and the alternatives this project offers (host memory, 16-bit cache, fewer processes).
2. Measured on a tiny model: the bytes the cache really holds for every unit, against the same shape formula.

    python benchmarks/recon_memory.py
"""

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from mmdet.models import build_detector
from mmdet.utils import fuse_conv_bn, load_config
from qdrop.config.q_config import load_q_config
from qdrop.model import quantization_units, quantize_detector
from qdrop.ptq import float_reference
from qdrop.ptq.calibration import calibrate
from qdrop.ptq.capture import forward_order
from qdrop.ptq.reconstruction import build_cache
from qdrop.quantization import disable_all

REPO_ROOT = Path(__file__).resolve().parents[1]

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GiB = 2**30


def unit_shapes(model: torch.nn.Module, height: int, width: int, device: str) -> list[tuple[str, tuple, tuple]]:
    """(unit name, input shape, output shape) per image for every reconstruction unit, in forward order."""
    units = quantization_units(model)
    shapes: dict[str, tuple[tuple, tuple]] = {}

    def record(name: str):
        def hook(_module, args, output) -> None:
            shapes.setdefault(name, (tuple(args[0].shape[1:]), tuple(output.shape[1:])))

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in units]
    with torch.no_grad():
        model.extract_feat(torch.zeros(1, 3, height, width, device=device))
    for handle in handles:
        handle.remove()
    order = [name for name, _ in forward_order(model, units, torch.zeros(1, 3, height, width, device=device))]
    return [(name, *shapes[name]) for name in order]


def cache_bytes_per_image(input_shape: tuple, output_shape: tuple, dtype: str, keep_fp_input: bool) -> int:
    numel = lambda shape: int(torch.Size(shape).numel())  # noqa: E731
    inputs = numel(input_shape) * (2 if keep_fp_input else 1)
    return (inputs + numel(output_shape)) * BYTES[dtype]


def coco_setting_table() -> str:
    cfg = load_config(str(REPO_ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py"))
    cfg.model.backbone.pop("init_cfg", None)
    q_config = load_q_config(str(REPO_ROOT / "exp/config.yaml"))
    with torch.device("meta"):
        model = build_detector(cfg.model).eval()
    model = quantize_detector(fuse_conv_bn(model), q_config)
    disable_all(model)
    shapes = unit_shapes(model, 800, 1344, "meta")
    per_image = [(name, cache_bytes_per_image(i, o, "float32", True)) for name, i, o in shapes]
    peak_name, peak = max(per_image, key=lambda item: item[1])
    name_in, name_out = next((i, o) for n, i, o in shapes if n == peak_name)
    lines = [
        f"Faster R-CNN R50-FPN, 800x1344 input, {len(shapes)} units; largest cache: {peak_name} "
        f"(input {name_in}, output {name_out}): {peak / 2**20:.0f} MiB per image with the float input, "
        f"float32",
        "",
        "| processes | images/process | drop_prob | cache dtype | where | peak cache per process | all processes |",
        "|---|---|---|---|---|---|---|",
    ]
    settings = [
        (8, 0.5, "float32", "GPU (keep_gpu: True, as exp/config.yaml)"),
        (8, 0.5, "float16", "host or GPU"),
        (8, 1.0, "float32", "GPU"),
        (1, 0.5, "float32", "host (keep_gpu: False)"),
        (1, 0.5, "float16", "host (keep_gpu: False)"),
        (1, 1.0, "bfloat16", "host (keep_gpu: False)"),
    ]
    for processes, drop_prob, dtype, where in settings:
        images = q_config.calibrate // processes
        unit_peak = max(cache_bytes_per_image(i, o, dtype, drop_prob < 1.0) for _, i, o in shapes)
        lines.append(
            f"| {processes} | {images} | {drop_prob} | {dtype} | {where} | {unit_peak * images / GiB:.2f} GiB "
            f"| {unit_peak * images * processes / GiB:.1f} GiB |"
        )
    return "\n".join(lines)


def tiny_model_measurement(num_images: int, height: int, width: int) -> str:
    cfg = load_config(str(REPO_ROOT / "configs/tiny/retinanet_tiny_synth.py"))
    torch.manual_seed(0)
    model = fuse_conv_bn(build_detector(cfg.model).eval())
    q_config = load_q_config(str(REPO_ROOT / "exp/demo/w2a4.yaml"))
    # ranges do not change the cache size; this observer is faster
    q_config = replace(q_config, a_qconfig=replace(q_config.a_qconfig, observer="AvgMinMaxObserver"))
    quantize_detector(model, q_config)
    reference = float_reference(model)
    images = [torch.randn(2, 3, height, width) for _ in range(num_images // 2)]
    calibrate(model, [{"img": img} for img in images], torch.device("cpu"), show_progress=False)
    shapes = unit_shapes(reference, height, width, "cpu")
    lines = [
        f"tiny RetinaNet (configs/tiny/retinanet_tiny_synth.py), {num_images} images of {height}x{width}, "
        "cache in host memory",
        "",
        "| cache dtype | drop_prob | largest unit | predicted peak | measured peak | build time |",
        "|---|---|---|---|---|---|",
    ]
    modules = dict(model.named_modules())
    fp_modules = dict(reference.named_modules())
    for dtype, drop_prob in (("float32", 0.5), ("float16", 0.5), ("float32", 1.0)):
        recon = replace(q_config.recon, cache_dtype=dtype, drop_prob=drop_prob)
        measured, started = [], time.time()
        for name, _, _ in shapes:
            cache = build_cache(model, reference, modules[name], fp_modules[name], images, recon, torch.device("cpu"))
            measured.append((name, cache.nbytes()))
            del cache
        elapsed = time.time() - started
        predicted = {name: cache_bytes_per_image(i, o, dtype, drop_prob < 1.0) * num_images for name, i, o in shapes}
        name, peak = max(measured, key=lambda item: item[1])
        mismatches = [n for n, b in measured if predicted[n] != b]
        assert not mismatches, f"cache size differs from the shape formula for {mismatches}"
        lines.append(
            f"| {dtype} | {drop_prob} | {name} | {max(predicted.values()) / 2**20:.2f} MiB "
            f"| {peak / 2**20:.2f} MiB | {elapsed:.1f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="calibration images of the tiny-model measurement")
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=480)
    args = parser.parse_args()
    print(coco_setting_table())
    print()
    print(tiny_model_measurement(args.images, args.height, args.width))


if __name__ == "__main__":
    main()

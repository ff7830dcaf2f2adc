"""Milliseconds per reconstruction step (forward, backward, both optimizers) of representative Faster R-CNN R50-FPN
units, plain fake quantization against the fused path (and, when asked, torch.compile and bfloat16 autocast).

Random weights with BatchNorm folded; activation ranges from MinMaxObserver on synthetic images (the cost of a
step does not depend on how the ranges were found); the quantizer classes of exp/config.yaml (LSQ activations,
AdaRound weights per channel) at W4A4 and W2A4, drop_prob 0.5, batch 2. Each variant runs `reconstruct_unit`
itself for a few steps; variants alternate every repetition and the median is reported. Conv FLOPs are counted with
torch.utils.flop_counter over one step (forward and backward); "saved" is what autograd keeps for the backward of
one step, the bulk of a step's memory on any device; CUDA also reports the allocator's peak.

    python benchmarks/recon_speed.py --threads 1            (CPU: 256x384 images)
    python benchmarks/recon_speed.py --size 800x1344         (GPU: the published input size)
    python benchmarks/recon_speed.py --quick                 (one unit, W4A4, few repetitions)
    python benchmarks/recon_speed.py --reconstruct 2 --iters 200   (the first 2 units end to end, W2A4 fast path)
    python benchmarks/recon_speed.py --quick --then-reconstruct 2  (both in one process)
"""

import argparse
import copy
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from mmdet.models import build_detector
from mmdet.utils import fuse_conv_bn, load_config
from qdrop.config.q_config import QConfig, load_q_config
from qdrop.model import quantization_units, quantize_detector
from qdrop.ptq.capture import forward_order
from qdrop.ptq.reconstruction import build_cache, reconstruct_unit, unit_output_error
from qdrop.quantization import disable_all, enable_calibration, enable_quantization

CONFIG = "configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py"
UNITS = ("backbone.layer1.0", "backbone.layer3.0", "neck.fpn_convs.0")
WEIGHT_BITS = {"W4A4": 4, "W2A4": 2}
VARIANTS = {  # name: recon overrides
    "plain": {"fast": False},
    "fast": {"fast": True},
    "fast+compile": {"fast": True, "compile": True},
    "fast+bf16": {"fast": True, "amp": "bfloat16"},
}
CONV_OPS = ("convolution", "convolution_backward")

REPO_ROOT = Path(__file__).resolve().parents[1]  # configs/ and exp/ are read from the checkout


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default=None, help="HxW of the images (default 256x384 on CPU, 800x1344 on GPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    parser.add_argument("--units", nargs="+", default=list(UNITS))
    parser.add_argument("--settings", nargs="+", choices=sorted(WEIGHT_BITS), default=["W4A4", "W2A4"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["plain", "fast"])
    parser.add_argument("--steps", type=int, default=4, help="reconstruction steps per timed call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant (interleaved)")
    parser.add_argument("--quick", action="store_true", help="first unit, W4A4, 2 steps x 3 repeats")
    parser.add_argument(
        "--reconstruct",
        type=int,
        default=0,
        metavar="N",
        help="instead: reconstruct the first N units in forward order (cache, --iters steps, error)",
    )
    parser.add_argument(
        "--then-reconstruct",
        type=int,
        default=0,
        metavar="N",
        help="after the step timings, reconstruct the first N units too (one process)",
    )
    parser.add_argument("--iters", type=int, default=200, help="steps per unit with --reconstruct / --then-reconstruct")
    args = parser.parse_args()
    if args.quick:
        args.units, args.settings, args.steps, args.repeats = args.units[:1], ["W4A4"], 2, 3
    if args.size is None:
        args.size = "800x1344" if args.device.startswith("cuda") else "256x384"
    try:
        args.height, args.width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected HxW, e.g. 256x384")
    return args


def quantized_r50(
    weight_bits: int, device: torch.device, images: list[torch.Tensor]
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(calibrated quantized detector, its float twin) with random weights."""
    cfg = load_config(str(REPO_ROOT / CONFIG))
    cfg.model.backbone.pop("init_cfg", None)
    torch.manual_seed(0)
    model = fuse_conv_bn(build_detector(cfg.model)).to(device).eval()
    fp_model = copy.deepcopy(model)
    q_config = load_q_config(str(REPO_ROOT / "exp/config.yaml")).to_dict()
    q_config["w_qconfig"].update(bit=weight_bits, observer="MinMaxObserver")
    q_config["a_qconfig"].update(observer="MinMaxObserver")
    model = quantize_detector(model, QConfig.from_mapping(q_config, "exp/config.yaml with MinMaxObserver"))
    enable_calibration(model)
    with torch.no_grad():
        for img in images:
            model.extract_feat(img)
    enable_quantization(model)
    disable_all(fp_model)
    return model, fp_model


def conv_flops_per_step(run_step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run_step()
    return sum(count for op, count in counter.get_flop_counts()["Global"].items() if str(op).split(".")[1] in CONV_OPS)


def saved_bytes_per_step(run_step) -> int:
    """Bytes of the tensors autograd saves for the backward during one step (storage counted once)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run_step()
    return sum(seen.values())


def measure_unit(
    model,
    fp_model,
    unit_name: str,
    images,
    base_cfg,
    variants: list[str],
    steps: int,
    repeats: int,
    device: torch.device,
) -> dict[str, dict[str, float]]:
    q_unit = dict(model.named_modules())[unit_name]
    fp_unit = dict(fp_model.named_modules())[unit_name]
    cache = build_cache(model, fp_model, q_unit, fp_unit, images, base_cfg, device)
    configs = {name: dataclasses.replace(base_cfg, iters=steps, **VARIANTS[name]) for name in variants}
    units = {name: copy.deepcopy(q_unit) for name in variants}

    def run(name: str, cfg=None) -> None:
        reconstruct_unit(units[name], cache, cfg or configs[name], seed=0, show_progress=False)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for name in variants:  # warm-up (compilation, allocator, caches)
        run(name)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name in variants:
            synchronize()
            start = time.perf_counter()
            run(name)
            synchronize()
            times[name].append((time.perf_counter() - start) / steps)
    one_step = {name: dataclasses.replace(configs[name], iters=1, warm_up=0.0) for name in variants}
    results = {}
    flops = conv_flops_per_step(lambda: run(variants[0], one_step[variants[0]]))
    for name in variants:
        row = {
            "ms": 1000 * statistics.median(times[name]),
            "conv_gflop": flops / 1e9,
            "saved_mib": saved_bytes_per_step(lambda name=name: run(name, one_step[name])) / 2**20,
        }
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            run(name, one_step[name])
            row["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        results[name] = row
    return results


def reconstruct_first_units(args, device: torch.device, images: list[torch.Tensor], count: int) -> None:
    """Time the whole reconstruction of the first units (published W2A4 setting, batch 2, fast path)."""
    model, fp_model = quantized_r50(WEIGHT_BITS["W2A4"], device, images)
    cfg = dataclasses.replace(load_q_config(str(REPO_ROOT / "exp/config.yaml")).recon, iters=args.iters)
    units = forward_order(model, quantization_units(model), images[0])[:count]
    print("| unit | steps | seconds | ms/step | error before | error after |")
    print("|---|---|---|---|---|---|")
    for name, q_unit in units:
        start = time.perf_counter()
        cache = build_cache(model, fp_model, q_unit, fp_model.get_submodule(name), images, cfg, device)
        before = unit_output_error(q_unit, cache)
        reconstruct_unit(q_unit, cache, cfg, seed=0, show_progress=False)
        after = unit_output_error(q_unit, cache)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        print(
            f"| {name} | {cfg.iters} | {seconds:.1f} | {1000 * seconds / cfg.iters:.1f} | {before:.4g} | {after:.4g} |",
            flush=True,
        )


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(2, 3, args.height, args.width, generator=generator).to(device)]
    where = (
        f"{device.type}, {torch.get_num_threads()} thread(s)"
        if device.type == "cpu"
        else torch.cuda.get_device_name(device)
    )
    if args.reconstruct:
        print_reconstruction(args, device, images, args.reconstruct, where)
        return
    print(
        f"Faster R-CNN R50-FPN units, random weights, batch 2 at {args.height}x{args.width}, drop_prob 0.5, "
        f"{args.steps} steps x {args.repeats} interleaved repetitions (median), {where}, torch {torch.__version__}"
    )
    header = "| unit | setting | variant | ms/step | speed-up vs plain | conv GFLOP/step | conv GFLOP/s | saved MiB |"
    if device.type == "cuda":
        header += " peak MiB |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for setting in args.settings:
        model, fp_model = quantized_r50(WEIGHT_BITS[setting], device, images)
        base_cfg = dataclasses.replace(
            load_q_config(str(REPO_ROOT / "exp/config.yaml")).recon, batch_size=2, drop_prob=0.5, keep_gpu=True
        )
        for unit_name in args.units:
            results = measure_unit(
                model, fp_model, unit_name, images, base_cfg, args.variants, args.steps, args.repeats, device
            )
            plain_ms = results["plain"]["ms"] if "plain" in results else None
            for name, row in results.items():
                speedup = f"{plain_ms / row['ms']:.2f}x" if plain_ms else "-"
                line = (
                    f"| {unit_name} | {setting} | {name} | {row['ms']:.1f} | {speedup} | {row['conv_gflop']:.2f} "
                    f"| {row['conv_gflop'] / (row['ms'] / 1000):.1f} | {row['saved_mib']:.0f} |"
                )
                if "peak_mib" in row:
                    line += f" {row['peak_mib']:.0f} |"
                print(line, flush=True)
    if args.then_reconstruct:
        print_reconstruction(args, device, images, args.then_reconstruct, where)


def print_reconstruction(args, device: torch.device, images: list[torch.Tensor], units: int, where: str) -> None:
    print(
        f"Faster R-CNN R50-FPN, first {units} units, W2A4 (exp/config.yaml recon, fast path), "
        f"batch 2 at {args.height}x{args.width}, {where}, torch {torch.__version__}"
    )
    reconstruct_first_units(args, device, images, units)


if __name__ == "__main__":
    main()

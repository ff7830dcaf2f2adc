"""Calibration: observers see the float forward, ranges are averaged over ranks, weights are observed per channel."""

import copy
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers.qdrop_models import faster_rcnn_cfg, fused_detector, q_config, random_batches, retinanet_cfg
from qdrop.config.q_config import QConfig, ReconConfig
from qdrop.model import quantize_detector
from qdrop.ptq import float_reference, run_calibration, shares_calibration, wrap
from qdrop.ptq.calibration import calibrate
from qdrop.ptq.reconstruction import build_cache, reconstruct_unit, unit_seed
from qdrop.quantization import fake_quantizers

CPU = torch.device("cpu")


def _ranges(model) -> dict:
    return {
        name: (
            q.activation_post_process.min_val.clone(),
            q.activation_post_process.max_val.clone(),
            q.scale.detach().clone(),
        )
        for name, q in fake_quantizers(model, "activation")
    }


def _calibrate_on_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    model = quantize_detector(fused_detector(retinanet_cfg(18)), q_config())
    batches = random_batches(1, seed=rank)  # every rank sees other images
    alone = copy.deepcopy(model)
    calibrate(alone, batches, CPU, show_progress=False)
    reference = float_reference(model)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        calibrate(model, batches, CPU, show_progress=False)
        # a few reconstruction steps on each rank's own data: gradients averaged over ranks keep the states equal
        recon = ReconConfig.from_mapping(q_config(w_bit=2, iters=5, drop_prob=0.5)["recon"])
        name = "backbone.layer2.0"
        cache = build_cache(
            model,
            reference,
            model.get_submodule(name),
            reference.get_submodule(name),
            [b["img"] for b in batches],
            recon,
            CPU,
        )
        reconstruct_unit(model.get_submodule(name), cache, recon, seed=unit_seed(0, 0, rank), show_progress=False)
    finally:
        dist.destroy_process_group()
    learned = {k: v for k, v in model.get_submodule(name).state_dict().items() if k.endswith(("alpha", "scale"))}
    torch.save(
        {"alone": _ranges(alone), "together": _ranges(model), "learned": learned},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


def test_two_processes_average_ranges_and_reconstruction_gradients(tmp_path):
    mp.spawn(_calibrate_on_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["alone"].keys() == ranks[0]["together"].keys()
    differ = 0
    for name, (min0, max0, _) in ranks[0]["alone"].items():
        min1, max1, _ = ranks[1]["alone"][name]
        differ += int(not torch.equal(min0, min1))
        for rank in ranks:
            got_min, got_max, _ = rank["together"][name]
            assert torch.allclose(got_min, (min0 + min1) / 2, atol=1e-6), name
            assert torch.allclose(got_max, (max0 + max1) / 2, atol=1e-6), name
        assert torch.equal(ranks[0]["together"][name][2], ranks[1]["together"][name][2])  # same scale everywhere
    assert differ > 0  # the ranks really saw different data
    learned = [rank["learned"] for rank in ranks]
    assert any(key.endswith("alpha") for key in learned[0]) and any(key.endswith("scale") for key in learned[0])
    for key, value in learned[0].items():
        assert torch.equal(value, learned[1][key]), key


def test_observers_watch_float_model_and_weights_once():
    model = quantize_detector(fused_detector(retinanet_cfg(18)), q_config(w_bit=2))
    batches = random_batches(2)
    calibrate(model, batches, CPU, show_progress=False)
    stem = model.backbone.conv1
    # weight observers saw the weights: one range per output channel
    weight_observer = stem.module.weight_fake_quant.activation_post_process
    assert weight_observer.min_val.shape == (stem.module.weight.shape[0],)
    for _, quantizer in fake_quantizers(model):
        assert not bool(quantizer.observer_enabled) and bool(quantizer.fake_quant_enabled)
    # quantization is on afterwards: the output is on the 4-bit grid of its quantizer
    out = model.backbone.conv1(batches[0]["img"])
    scale = stem.block_post_act_fake_quantize.scale.detach()
    zero_point = stem.block_post_act_fake_quantize.zero_point.detach()
    levels = torch.unique(torch.round(out / scale + zero_point))
    assert len(levels) <= 16


def test_quant_head_calibration_runs_the_heads():
    model = quantize_detector(fused_detector(faster_rcnn_cfg(50)), q_config(quant_head=True))
    meta = dict(
        img_shape=(64, 96, 3),
        ori_shape=(64, 96, 3),
        pad_shape=(64, 96, 3),
        flip=False,
        scale_factor=np.ones(4, dtype=np.float32),
        batch_input_shape=(64, 96),
    )
    batches = [dict(batch, img_metas=[dict(meta), dict(meta)]) for batch in random_batches(1)]
    calibrate(model, batches, CPU, run_heads=True, show_progress=False)
    for quantizer in (
        model.rpn_head.rpn_conv.block_post_act_fake_quantize,
        model.roi_head.bbox_head.shared_fcs[1].block_post_act_fake_quantize,
    ):
        observer = quantizer.activation_post_process
        assert torch.isfinite(observer.min_val).all() and observer.max_val > 0


def test_shared_calibration_matches_own_calibration():
    batches = random_batches(1)
    w4, w2 = QConfig.from_mapping(q_config(w_bit=4)), QConfig.from_mapping(q_config(w_bit=2))
    assert shares_calibration(w4, w2) and not shares_calibration(w4, QConfig.from_mapping(q_config(a_bit=2)))
    lender, _ = wrap(fused_detector(retinanet_cfg(18)), w4, CPU)
    run_calibration(lender, batches, w4, CPU)
    borrower, _ = wrap(fused_detector(retinanet_cfg(18)), w2, CPU)
    run_calibration(borrower, batches, w2, CPU, calibrated=lender)
    alone, _ = wrap(fused_detector(retinanet_cfg(18)), w2, CPU)
    run_calibration(alone, batches, w2, CPU)
    assert borrower.state_dict().keys() == alone.state_dict().keys()
    for key, value in alone.state_dict().items():
        assert torch.equal(borrower.state_dict()[key], value), key

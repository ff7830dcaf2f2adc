"""tools/deploy (qdrop/cli): export a quantized checkpoint and evaluate it in ONNX Runtime; the detections equal the
PyTorch model's and so does the mAP."""

import glob
import json
from pathlib import Path

import pytest
import torch

from helpers.onnx_models import quantized_detector
from helpers.qdrop_models import faster_rcnn_cfg, q_config, retinanet_cfg, write_tiny_config
from mmdet.apis import single_gpu_test
from mmdet.apis.inference import prepare_test_config
from mmdet.datasets import build_dataloader, build_dataset
from mmdet.datasets.synthetic import make_synthetic_coco
from mmdet.models import build_detector
from mmdet.utils import load_config, save_checkpoint
from qdrop.cli import compare_onnx, export_onnx, test_onnx
from qdrop.deploy import OnnxDetector
from qdrop.model import save_quantized_checkpoint
from qdrop.solver.detector import load_detector


def _retinanet_keeping_low_scores() -> dict:
    """The random-init head scores about its prior 0.01: a lower threshold keeps detections to compare."""
    cfg = retinanet_cfg(18)
    cfg["test_cfg"]["score_thr"] = 0.005
    return cfg


MODELS = {"retinanet": _retinanet_keeping_low_scores(), "faster_rcnn": faster_rcnn_cfg(50)}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy_data")
    make_synthetic_coco(root, num_train=2, num_val=3, seed=0)
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_root):
    """(config, quantized checkpoint, float checkpoint) of each tiny detector on the synthetic data, written once."""
    folder = tmp_path_factory.mktemp("deploy_checkpoints")
    written = {}
    for name, model_cfg in MODELS.items():
        config = write_tiny_config(folder / f"{name}.py", data_root, model_cfg)
        quantized = folder / f"{name}_quantized.pth"
        save_quantized_checkpoint(quantized_detector(name, w_bit=4), str(quantized), q_config(w_bit=4, a_bit=4))
        torch.manual_seed(0)
        float_checkpoint = folder / f"{name}_float.pth"
        save_checkpoint(build_detector(model_cfg), str(float_checkpoint))
        written[name] = (config, quantized, float_checkpoint)
    return written


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_evaluation_equals_pytorch(tmp_path, checkpoints, name, capsys):
    config, quantized, _ = checkpoints[name]
    onnx_file = tmp_path / f"{name}.onnx"
    files = export_onnx.main([str(config), str(quantized), "--out", str(onnx_file), "--require-quantized"])
    assert f"quantized (QDQ) network graph written to {onnx_file}" in capsys.readouterr().out
    assert Path(files["network"]).is_file() and (("bbox_head" in files) == (name == "faster_rcnn"))

    cfg = prepare_test_config(load_config(str(config)))
    dataset = build_dataset(cfg.data.test)
    loader = build_dataloader(dataset, samples_per_gpu=1, workers_per_gpu=0, dist=False, shuffle=False)
    model, is_quantized, _ = load_detector(load_config(str(config)), str(quantized))
    assert is_quantized
    expected = single_gpu_test(model, loader, show_progress=False)
    detector = OnnxDetector.from_file(build_detector(cfg.model), str(onnx_file), optimization="disable", threads=1)
    results = single_gpu_test(detector, loader, show_progress=False)
    assert sum(len(boxes) for image in expected for boxes in image) > 0
    for got_image, want_image in zip(results, expected):
        for got, want in zip(got_image, want_image):
            assert got.shape == want.shape
            assert abs(got - want).max(initial=0.0) <= 1e-3

    differences = compare_onnx.main(
        [str(config), str(quantized), str(onnx_file), "--images", "1", "--optimization", "disable", "--threads", "1"]
    )
    assert set(differences) == {"disable"} and len(differences["disable"]) > 0
    for difference in differences["disable"].values():
        assert difference.max_abs_diff <= 1e-4 * max(1.0, difference.max_abs_value), difference

    work_dir = tmp_path / "eval"
    metric = test_onnx.main([str(config), str(onnx_file), "--eval", "bbox", "--work-dir", str(work_dir)])
    torch_metric = dataset.evaluate(expected, metric=["bbox"])
    assert metric["bbox_mAP"] == pytest.approx(torch_metric["bbox_mAP"], abs=1e-3)
    (record_file,) = glob.glob(str(work_dir / "eval_*.json"))
    record = json.loads(Path(record_file).read_text())
    assert record["config"] == str(config) and record["metric"]["bbox_mAP"] == metric["bbox_mAP"]


def test_float_checkpoint_refused_when_quantized_required(tmp_path, checkpoints, capsys):
    config, _, float_checkpoint = checkpoints["retinanet"]
    with pytest.raises(ValueError, match=r"is a float checkpoint, but a quantized one .* is required"):
        export_onnx.main([str(config), str(float_checkpoint), "--out", str(tmp_path / "x.onnx"), "--require-quantized"])
    capsys.readouterr()
    files = export_onnx.main([str(config), str(float_checkpoint), "--out", str(tmp_path / "float.onnx")])
    assert Path(files["network"]).is_file()
    assert capsys.readouterr().out.startswith("float network graph written to")


def test_checkpoint_of_another_model_is_refused(tmp_path, checkpoints):
    _, quantized, _ = checkpoints["retinanet"]
    other_config, _, _ = checkpoints["faster_rcnn"]
    with pytest.raises(ValueError, match=r"does not fit the model of .*faster_rcnn\.py"):
        export_onnx.main([str(other_config), str(quantized), "--out", str(tmp_path / "x.onnx")])

"""The command-line tools, each a `main(argv)` and a `cli()` entry point over the package:

    test.py             tools/test.py, qdrop-test: evaluate a float or quantized checkpoint
    train.py            tools/train.py, qdrop-train: train a detector
    demo.py             exp/demo.py, qdrop-demo: the tiny detectors in FP / W4A4 / W2A4
    export_onnx.py      tools/deploy/export_onnx.py: a checkpoint as ONNX QDQ graphs
    test_onnx.py        tools/deploy/test_onnx.py: evaluate an ONNX graph in ONNX Runtime
    compare_onnx.py     tools/deploy/compare_onnx.py: raw outputs of a graph against its checkpoint
    sensitivity.py      tools/analysis/sensitivity.py: per-unit quantization sensitivity
    show_detections.py  tools/analysis/show_detections.py: float and quantized detections side by side

The published entry point, qdrop/solver/quant_coco.py (qdrop-quant), lives with the run it starts.
"""

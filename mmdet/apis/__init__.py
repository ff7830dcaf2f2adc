from .inference import inference_detector, init_detector
from .test import evaluation_kwargs, multi_gpu_test, single_gpu_test
from .train import train_detector

__all__ = [
    "evaluation_kwargs",
    "inference_detector",
    "init_detector",
    "multi_gpu_test",
    "single_gpu_test",
    "train_detector",
]

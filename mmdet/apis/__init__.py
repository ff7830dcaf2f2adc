from .inference import inference_detector, init_detector
from .test import multi_gpu_test, single_gpu_test
from .train import train_detector

__all__ = ["inference_detector", "init_detector", "multi_gpu_test", "single_gpu_test", "train_detector"]

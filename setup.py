"""Install the `mmdet` (compact mmdetection 2.28 re-implementation) and `qdrop` packages."""

from pathlib import Path

from setuptools import find_packages, setup


def read_requirements(name: str) -> list:
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="qdrop-det",
    version="0.1.0",
    description="QDrop post-training quantization of mmdetection-style object detectors, compile-free",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["mmdet", "mmdet.*", "qdrop", "qdrop.*"]),
    install_requires=read_requirements("requirements.txt"),
    extras_require={
        "tests": ["pytest>=7", "ruff==0.17.6", "scipy>=1.7"],
        "deploy": ["onnx", "onnxruntime"],
        "analysis": ["matplotlib"],
    },
    entry_points={
        "console_scripts": [
            "qdrop-train=qdrop.cli.train:cli",
            "qdrop-quant=qdrop.solver.quant_coco:cli",
            "qdrop-test=qdrop.cli.test:cli",
            "qdrop-demo=qdrop.cli.demo:cli",
        ]
    },
)

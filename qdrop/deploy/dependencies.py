"""The optional ONNX packages, imported on first use with an error that names the extra to install."""

from types import ModuleType

from mmdet.utils.errors import MissingExtraError

INSTALL_HINT = "pip install -e .[deploy]"


def _import(name: str) -> ModuleType:
    try:
        return __import__(name)
    except ImportError as err:
        raise MissingExtraError(
            f"qdrop.deploy needs the '{name}' package, which is not installed: run `{INSTALL_HINT}` "
            "(it installs onnx and onnxruntime)"
        ) from err


def import_onnx() -> ModuleType:
    """The `onnx` module, or ImportError naming the `deploy` extra."""
    return _import("onnx")


def import_onnxruntime() -> ModuleType:
    """The `onnxruntime` module, or ImportError naming the `deploy` extra."""
    return _import("onnxruntime")

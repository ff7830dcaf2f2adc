"""The post-training quantization algorithm: calibration (observers set every range) and block reconstruction
(AdaRound rounding and LSQ scales learnt against the float model, QDrop's random dropping of activation
quantization), with its input cache and the record of what it did. It knows nothing of the runs, deployment or
analysis that use it."""

from .calibration import (
    NonFiniteCalibrationError,
    calibrate,
    copy_activation_calibration,
    observe_weights,
    run_calibration,
    shares_calibration,
)
from .capture import forward_order
from .reconstruction import (
    NonFiniteReconstructionError,
    build_cache,
    float_reference,
    reconstruct,
    reconstruct_unit,
    run_reconstruction,
    unit_output_error,
    wrap,
)
from .record import ReconstructionRecord, UnitReconstruction

__all__ = [
    "NonFiniteCalibrationError",
    "NonFiniteReconstructionError",
    "ReconstructionRecord",
    "UnitReconstruction",
    "build_cache",
    "calibrate",
    "copy_activation_calibration",
    "float_reference",
    "forward_order",
    "observe_weights",
    "reconstruct",
    "reconstruct_unit",
    "run_calibration",
    "run_reconstruction",
    "shares_calibration",
    "unit_output_error",
    "wrap",
]

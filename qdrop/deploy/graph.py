"""A small ONNX graph writer: unique names, initializers, single-output nodes, and QDQ pairs from quantizers."""

from collections.abc import Sequence
from typing import Optional

import numpy as np

from .dependencies import import_onnx
from .qdq import MIN_OPSET_4BIT, MIN_OPSET_PER_AXIS, QuantParams

NUMPY_TYPES = {"INT8": np.int8, "UINT8": np.uint8}


class GraphBuilder:
    """Collects nodes and initializers of one ONNX graph; every ``node`` call returns its (unique) output name.

    Args:
        opset: the default-domain opset the graph is written for; QDQ pairs check that it supports their types.
    """

    def __init__(self, opset: int):
        self.onnx = import_onnx()
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self._used: dict[str, int] = {}

    def unique(self, prefix: str) -> str:
        count = self._used.get(prefix, 0)
        self._used[prefix] = count + 1
        return prefix if count == 0 else f"{prefix}_{count}"

    def constant(self, prefix: str, array: np.ndarray, onnx_type: Optional[str] = None) -> str:
        """An initializer holding ``array``: float32 unless ``onnx_type`` names an integer type (INT4, UINT8, ...)."""
        name = self.unique(prefix)
        helper, numpy_helper = self.onnx.helper, self.onnx.numpy_helper
        if onnx_type is None:
            tensor = numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)
        elif onnx_type in NUMPY_TYPES:
            tensor = numpy_helper.from_array(np.ascontiguousarray(array).astype(NUMPY_TYPES[onnx_type]), name)
        elif onnx_type == "INT64":
            tensor = numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.int64), name)
        else:  # 4-bit types are packed two per byte by make_tensor
            data_type = getattr(self.onnx.TensorProto, onnx_type)
            tensor = helper.make_tensor(name, data_type, list(array.shape), np.asarray(array).reshape(-1).tolist())
        self.initializers.append(tensor)
        return name

    def node(self, op_type: str, inputs: Sequence[str], prefix: str, **attributes) -> str:
        """Append one node with a single output named after ``prefix``; returns that name."""
        output = self.unique(prefix)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def quantize_dequantize(self, x: str, params: QuantParams, prefix: str) -> str:
        """QuantizeLinear -> DequantizeLinear of ``x`` with ``params``; a tensor narrower than its integer type is
        first clipped to the dequantized ends of its own range, so that the pair saturates where the fake quantizer
        clamps."""
        self._check_opset(params, prefix)
        if params.needs_clip:
            x = self._clip_to_range(x, params, prefix)
        scale, zero_point = self._qparams(params, prefix)
        attributes = {"axis": params.axis} if params.per_channel else {}
        q = self.node("QuantizeLinear", [x, scale, zero_point], f"{prefix}/quantize", **attributes)
        return self.node("DequantizeLinear", [q, scale, zero_point], f"{prefix}/dequantize", **attributes)

    def dequantized_weight(self, ints: np.ndarray, params: QuantParams, prefix: str) -> str:
        """An integer weight initializer of the quantizer's type feeding a DequantizeLinear on the weight's
        output-channel axis ``params.axis`` (0; 1 for a transposed conv)."""
        self._check_opset(params, prefix)
        weight = self.constant(f"{prefix}/weight_int", ints, params.onnx_type)
        scale, zero_point = self._qparams(params, prefix)
        return self.node("DequantizeLinear", [weight, scale, zero_point], f"{prefix}/weight", axis=params.axis)

    def _qparams(self, params: QuantParams, prefix: str):
        shape = params.scale.shape if params.per_channel else ()  # a per-tensor pair takes scalars
        scale = self.constant(f"{prefix}/scale", params.scale.reshape(shape))
        zero_point = self.constant(f"{prefix}/zero_point", params.zero_point.reshape(shape), params.onnx_type)
        return scale, zero_point

    def _clip_to_range(self, x: str, params: QuantParams, prefix: str) -> str:
        qmin, qmax = params.quant_range
        low = (qmin - params.zero_point) * params.scale  # (C,) or (1,)
        high = (qmax - params.zero_point) * params.scale
        if not params.per_channel:
            low_name = self.constant(f"{prefix}/clip_min", low.reshape(()).astype(np.float32))
            high_name = self.constant(f"{prefix}/clip_max", high.reshape(()).astype(np.float32))
            return self.node("Clip", [x, low_name, high_name], f"{prefix}/clip")
        # per channel along params.axis of an NCHW-like tensor: bounds shaped (C, 1, ..., 1) broadcast from the right
        if params.axis != 1:
            raise ValueError(
                f"{prefix}: per-channel activation quantizers narrower than their integer type are "
                f"exported on axis 1 only, got axis {params.axis}"
            )
        shape = (-1, 1, 1)
        low_name = self.constant(f"{prefix}/clip_min", low.reshape(shape).astype(np.float32))
        high_name = self.constant(f"{prefix}/clip_max", high.reshape(shape).astype(np.float32))
        return self.node("Min", [self.node("Max", [x, low_name], f"{prefix}/clip_low"), high_name], f"{prefix}/clip")

    def _check_opset(self, params: QuantParams, prefix: str) -> None:
        if params.onnx_type in ("INT4", "UINT4") and self.opset < MIN_OPSET_4BIT:
            raise ValueError(
                f"{prefix}: {params.onnx_type} tensors need opset >= {MIN_OPSET_4BIT}, got --opset {self.opset}"
            )
        if params.per_channel and self.opset < MIN_OPSET_PER_AXIS:
            raise ValueError(
                f"{prefix}: per-channel QuantizeLinear/DequantizeLinear need opset >= "
                f"{MIN_OPSET_PER_AXIS}, got --opset {self.opset}"
            )

    def model(self, inputs: Sequence, outputs: Sequence, graph_name: str):
        """The ModelProto of everything added so far; ``inputs``/``outputs`` are ValueInfoProtos."""
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, graph_name, list(inputs), list(outputs), self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="qdrop-det")
        self.onnx.checker.check_model(model)
        return model

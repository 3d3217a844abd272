"""The numpy arrays of constant values, each decoded once per run (the linter's, the fusion prediction's).

A loaded initializer (onnx-ir's TensorProtoTensor) decodes its proto at every `numpy()` call, and one scale
is read by its Q, its DQ and the layer's bias check. :class:`ConstantArrays` keeps each value's array for
one run; :func:`tensor_array` decodes the common case (little-endian raw bytes of a plain numeric type)
without the per-call type lookups of `numpy()`, to the same array.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.serde import TensorProtoTensor

from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.op_facts import value_dtype

# Raw-data element types numpy reads as they are (onnx-ir's `numpy()` takes the same path for these).
_PLAIN_TYPES: dict[int, np.dtype] = {
    int(t): t.numpy().newbyteorder("<")
    for t in (
        ir.DataType.FLOAT,
        ir.DataType.DOUBLE,
        ir.DataType.FLOAT16,
        ir.DataType.INT8,
        ir.DataType.UINT8,
        ir.DataType.INT16,
        ir.DataType.UINT16,
        ir.DataType.INT32,
        ir.DataType.UINT32,
        ir.DataType.INT64,
        ir.DataType.UINT64,
    )
}

_DATA_TYPES: dict[int, ir.DataType] = {int(t): t for t in ir.DataType}


def tensor_array(tensor: ir.TensorProtocol) -> np.ndarray:
    """`tensor.numpy()`, decoding a loaded proto's raw bytes directly when its type is plain numeric."""
    if type(tensor) is TensorProtoTensor:
        proto = tensor.raw
        dtype = _PLAIN_TYPES.get(proto.data_type)
        if (
            dtype is not None
            and proto.data_location == onnx.TensorProto.DEFAULT
            and proto.HasField("raw_data")
        ):
            array = np.frombuffer(proto.raw_data, dtype=dtype)
            dims = proto.dims
            if len(dims) == 1 and dims[0] == array.size:
                return array  # of its shape already (a reshape from proto dims costs more than the decode)
            return array.reshape(list(dims))
    return tensor.numpy()


def constant_dtype(value: ir.Value | None) -> ir.DataType | None:
    """`value_dtype(value)`, reading a loaded initializer's element type without an enum construction."""
    if value is not None and not value.is_graph_input():
        tensor = value.const_value
        if type(tensor) is TensorProtoTensor:
            dtype = _DATA_TYPES.get(tensor.raw.data_type)
            if dtype is not None:
                return dtype
    return value_dtype(value)


def value_array(value: ir.Value | None) -> np.ndarray | None:
    """`constant_array(value)` (initializer or Constant output, else None), with :func:`tensor_array`."""
    if value is None:
        return None
    tensor = value.const_value
    if tensor is not None and not value.is_graph_input():
        return tensor_array(tensor)
    return constant_array(value)


class ConstantArrays:
    """Each constant value's array, read once while this object lives (one lint run, one prediction)."""

    def __init__(self) -> None:
        self._arrays: dict[int, tuple[ir.Value, np.ndarray | None]] = {}  # the value kept: ids stay unique
        self.decoded = 0  # values read (the work tests count)

    def array(self, value: ir.Value | None) -> np.ndarray | None:
        """:func:`value_array`, read once per value."""
        if value is None:
            return None
        known = self._arrays.get(id(value))
        if known is None:
            self.decoded += 1
            known = self._arrays[id(value)] = (value, value_array(value))
        return known[1]

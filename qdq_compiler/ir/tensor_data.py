"""The array and element type of a tensor, read from a loaded initializer's proto directly (the one home
for these fast paths into onnx-ir's `TensorProtoTensor`).

onnx-ir's `TensorProtoTensor.numpy()` looks its types up again at every call; for little-endian raw bytes
of a plain numeric type :func:`tensor_array` reads the same array (read-only, as `numpy()` returns it)
straight from the bytes. Its `dtype` builds an enum member per call; :func:`tensor_dtype` looks it up.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.serde import TensorProtoTensor

__all__ = ["tensor_array", "tensor_dtype"]

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


def tensor_dtype(tensor: ir.TensorProtocol) -> ir.DataType:
    """`tensor.dtype`, looked up from a loaded proto's element type without building the enum member."""
    if type(tensor) is TensorProtoTensor:
        dtype = _DATA_TYPES.get(tensor.raw.data_type)
        if dtype is not None:
            return dtype
    return tensor.dtype


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

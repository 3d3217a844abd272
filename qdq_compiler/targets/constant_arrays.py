"""The numpy arrays of constant values, each decoded once per run (the linter's, the fusion prediction's).

A loaded initializer (onnx-ir's TensorProtoTensor) decodes its proto at every `numpy()` call, and one scale
is read by its Q, its DQ and the layer's bias check. :class:`ConstantArrays` keeps each value's array for
one run, decoded by :func:`qdq_compiler.ir.tensor_data.tensor_array` (raw bytes of a plain numeric type read
directly, to the same array as `numpy()`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.op_facts import value_dtype
from qdq_compiler.ir.tensor_data import tensor_dtype


def constant_dtype(value: ir.Value | None) -> ir.DataType | None:
    """`value_dtype(value)`, an initializer's element type read by :func:`tensor_dtype`."""
    if value is not None and value.const_value is not None and not value.is_graph_input():
        return tensor_dtype(value.const_value)
    return value_dtype(value)


class ConstantArrays:
    """Each constant value's array, read once while this object lives (one lint run, one prediction)."""

    def __init__(self) -> None:
        self._arrays: dict[int, tuple[ir.Value, np.ndarray | None]] = {}  # the value kept: ids stay unique
        self.decoded = 0  # values read (the work tests count)

    def array(self, value: ir.Value | None) -> np.ndarray | None:
        """`constant_array(value)`, read once per value."""
        if value is None:
            return None
        known = self._arrays.get(id(value))
        if known is None:
            self.decoded += 1
            known = self._arrays[id(value)] = (value, constant_array(value))
        return known[1]

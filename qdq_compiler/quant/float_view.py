"""The float model behind a Q/DQ model: what calibration runs, so placeholder scales cannot distort it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from qdq_compiler.ir import eliminate_dead_code, to_proto
from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.editing import add_constant, constant_array
from qdq_compiler.ir.op_facts import qdq_axis
from qdq_compiler.ir.qdq import broadcast_scale, is_dequantize, is_quantize


def float_view(model: ir.Model) -> onnx.ModelProto:
    """A copy of `model` with every Q->DQ pair bypassed and INT8 weights dequantized; tensor names kept.

    The copy shares `model`'s weight tensors (an IR clone), so only the returned proto holds a second copy.
    """
    copy = model.clone()
    graph = copy.graph
    for node in list(graph):
        if not is_dequantize(node):
            continue
        source = node.inputs[0]
        producer = source.producer() if source is not None else None
        if is_quantize(producer):
            node.outputs[0].replace_all_uses_with(input_of(producer, 0), replace_graph_outputs=True)
            continue
        stored = constant_array(source)
        scale = constant_array(node.inputs[1])
        if stored is None or scale is None:  # a computed scale: the DQ stays and runs
            continue
        zero = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        weights = dequantize(stored, scale, zero, qdq_axis(node))
        replacement = add_constant(graph, weights, f"{node.outputs[0].name}_float")
        node.outputs[0].replace_all_uses_with(replacement, replace_graph_outputs=True)
    eliminate_dead_code(graph)
    return to_proto(copy)


def dequantize(stored: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    """(q - zero) * scale in the scale's dtype, per-channel along `axis` when the scale is a vector.

    Computed in float64 and rounded once: exact for INT8 weights, and for INT32 biases beyond 2**24 too.
    """
    values = stored.astype(np.float64)
    if zero is not None:
        values = values - broadcast_scale(zero.astype(np.float64), stored.ndim, axis)
    return (values * broadcast_scale(scale.astype(np.float64), stored.ndim, axis)).astype(scale.dtype)

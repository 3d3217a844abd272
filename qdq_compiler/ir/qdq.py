"""Q/DQ helpers: recognise QuantizeLinear/DequantizeLinear, read their scales, insert a pair on an edge."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.editing import NameScope, add_constant, constant_array, insert_on_edge
from qdq_compiler.ir.op_facts import DEQUANTIZE, QUANTIZE, is_dequantize, is_quantize, qdq_axis

__all__ = [
    "DEQUANTIZE",
    "QUANTIZE",
    "axis_of",
    "broadcast_scale",
    "cast_scale",
    "count_qdq",
    "insert_qdq_pair",
    "is_dequantize",
    "is_quantize",
    "scale_of",
    "set_scale",
    "zero_point_of",
]


def scale_of(node: ir.Node) -> np.ndarray | None:
    """The constant scale of a Q or DQ node, or None when it is not constant."""
    return constant_array(node.inputs[1])


def zero_point_of(node: ir.Node) -> np.ndarray | None:
    """The constant zero-point of a Q or DQ node, or None when absent or not constant."""
    return constant_array(node.inputs[2]) if len(node.inputs) > 2 else None


def axis_of(node: ir.Node) -> int | None:
    """The per-channel axis of a Q or DQ node whose scale is a vector; None for per-tensor."""
    scale = scale_of(node)
    if scale is None or scale.ndim == 0 or scale.size == 1:
        return None
    return qdq_axis(node)


def count_qdq(graph: ir.Graph) -> tuple[int, int]:
    """(number of QuantizeLinear, number of DequantizeLinear) in the graph."""
    q = sum(1 for node in graph if is_quantize(node))
    dq = sum(1 for node in graph if is_dequantize(node))
    return q, dq


def insert_qdq_pair(
    value: ir.Value,
    scale: np.ndarray,
    consumers: Iterable[ir.Node] | None = None,
    axis: int | None = None,
    quant_dtype: type[np.integer] = np.int8,
    names: NameScope | None = None,
) -> tuple[ir.Node, ir.Node]:
    """Insert QuantizeLinear -> DequantizeLinear on `value` for the chosen consumers (all if None).

    Zero-points are 0 (symmetric, as TensorRT requires). The scale takes the tensor's float type when that is
    float16/bfloat16 (ONNX opset 19 wants scale, input and DQ output in one type), else the dtype of `scale`.
    Names derive from the tensor name: `<name>_quantized`, `<name>_dequantized`. Pass the graph's `names`
    scope when inserting many pairs (the Rewriter does): without it each call scans every name in the graph.
    """
    graph = value.graph
    assert graph is not None, "value is not in a graph"
    names = names if names is not None else NameScope(graph)
    base = value.name or "tensor"
    scale = _in_float_type_of(value, np.asarray(scale))
    scale_value = add_constant(graph, scale, names.value(f"{base}_scale"))
    zero = np.zeros(scale.shape, dtype=quant_dtype)
    zero_value = add_constant(graph, zero, names.value(f"{base}_zero_point"))
    attrs = (ir.AttrInt64("axis", axis),) if axis is not None else ()
    q_type = ir.TensorType(ir.DataType.from_numpy(zero.dtype))
    q_out = ir.Value(name=names.value(f"{base}_quantized"), shape=value.shape, type=q_type)
    quantize = ir.Node(
        "", QUANTIZE, (value, scale_value, zero_value), attrs, outputs=(q_out,), name=names.node(f"{base}_Q")
    )
    dq_type = ir.TensorType(ir.DataType.from_numpy(scale.dtype))
    dq_out = ir.Value(name=names.value(f"{base}_dequantized"), shape=value.shape, type=dq_type)
    dequantize = ir.Node(
        "",
        DEQUANTIZE,
        (q_out, scale_value, zero_value),
        attrs,
        outputs=(dq_out,),
        name=names.node(f"{base}_DQ"),
    )
    insert_on_edge(value, [quantize, dequantize], dq_out, consumers)
    return quantize, dequantize


def set_scale(quantize: ir.Node, scale: np.ndarray, names: NameScope | None = None) -> None:
    """Give a Q node and every DQ reading it a new scale (dtype of the old scale kept).

    The scale constant is updated in place when only this Q/DQ group reads it, else a new one is made
    (named from `names`, the graph's scope, when given; else from a scan of the graph's names).
    """
    graph = quantize.graph
    assert graph is not None, "node is not in a graph"
    old = quantize.inputs[1]
    old_array = constant_array(old)
    dtype = old_array.dtype if old_array is not None else np.float32
    array = cast_scale(np.asarray(scale), dtype)
    dequantizers = [user for user, index in quantize.outputs[0].uses() if is_dequantize(user) and index == 0]
    group = {id(quantize), *map(id, dequantizers)}
    if old is not None and old.is_initializer() and all(id(user) in group for user, _ in old.uses()):
        old.const_value = ir.Tensor(array, name=old.name)  # not ir.tensor(): its protocol checks are slow
        return
    base = quantize.inputs[0].name if quantize.inputs[0] is not None and quantize.inputs[0].name else "tensor"
    names = names if names is not None else NameScope(graph)
    new = add_constant(graph, array, names.value(f"{base}_scale"))
    quantize.replace_input_with(1, new)
    for user in dequantizers:
        user.replace_input_with(1, new)


def broadcast_scale(scale: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A per-channel scale vector reshaped to broadcast along `axis` of an `ndim`-d tensor (scalars as is)."""
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * ndim
        shape[axis % ndim] = scale.size
        return scale.reshape(shape)
    return scale


def _in_float_type_of(value: ir.Value, scale: np.ndarray) -> np.ndarray:
    """`scale` cast to the float16/bfloat16 type of `value`; as is for float32 (or unknown) tensors."""
    dtype = value.const_value.dtype if value.const_value is not None else value.dtype
    if dtype not in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16):
        return scale
    return cast_scale(scale, dtype.numpy())


def cast_scale(scale: np.ndarray, dtype: np.dtype | type[np.floating]) -> np.ndarray:
    """`scale` in `dtype`; positive scales that underflow to 0 (float16 below 6e-8) get its smallest step."""
    scale = np.asarray(scale)
    cast = scale.astype(dtype)
    if scale.dtype == cast.dtype:  # nothing can underflow (the common float32 -> float32)
        return cast
    underflow = (cast == 0) & (np.asarray(scale) > 0)
    if np.any(underflow):
        cast = np.where(underflow, np.finfo(dtype).smallest_subnormal, cast).astype(dtype)
    return cast

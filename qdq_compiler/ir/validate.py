"""Checks at load that turn malformed models into one-line errors before any numpy or onnx call sees them.

* :func:`check_tensor_data`: every initializer and Constant tensor holds as many values as its dims say
  (a model saved without its weights declares them with dims and no data);
* :func:`check_weighted_ranks`: Conv/ConvTranspose/Gemm/MatMul inputs whose rank is known have a rank the
  operator accepts (a rank-2 Conv would otherwise be compiled into an invalid model). Ranks known only after
  shape inference are checked again by place-qdq.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir

from qdq_compiler.errors import ModelLoadError

__all__ = ["check_tensor_data", "check_weighted_ranks", "rank_problem"]

# data types packed two values per byte
_PACKED_4BIT = {
    getattr(onnx.TensorProto, name)
    for name in ("INT4", "UINT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)
}
_COMPLEX = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def check_tensor_data(proto: onnx.ModelProto, origin: str) -> None:
    """Raise :class:`ModelLoadError` naming the first tensor whose stored values do not fill its dims."""
    for tensor, where in _constant_tensors(proto.graph):
        problem = _data_problem(tensor)
        if problem:
            shape = "[" + ",".join(map(str, tensor.dims)) + "]"
            dtype = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
            raise ModelLoadError(f"{origin}: {where} {tensor.name!r} ({dtype} {shape}) {problem}")


def _constant_tensors(graph: onnx.GraphProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    """Initializers and Constant-node tensors of ``graph`` and its subgraphs."""
    for tensor in graph.initializer:
        yield tensor, "initializer"
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.type == onnx.AttributeProto.TENSOR:
                tensor = onnx.TensorProto()
                tensor.CopyFrom(attribute.t)
                tensor.name = node.output[0] if node.output else node.name
                yield tensor, "Constant"
            elif attribute.type == onnx.AttributeProto.GRAPH:
                yield from _constant_tensors(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _constant_tensors(subgraph)


def _data_problem(tensor: onnx.TensorProto) -> str:
    """Why ``tensor``'s data do not match its dims ('' when they do or cannot be judged here)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return ""  # not loaded here: the external-data loader reports a missing file
    count = math.prod(tensor.dims)
    if tensor.HasField("raw_data"):
        expected = _raw_bytes(tensor.data_type, count)
        stored = len(tensor.raw_data)
        if expected is None or stored == expected:
            return ""
        if stored == 0:
            return _NO_DATA
        return f"holds {stored} bytes of data where its {count} values need {expected}"
    stored = sum(len(getattr(tensor, name)) for name in _TYPED_FIELDS)
    if count == 0:
        return ""
    if stored == 0:
        return _NO_DATA
    expected = _typed_values(tensor.data_type, count)
    if stored != expected:
        return f"holds {stored} values where its dims need {expected}"
    return ""


_NO_DATA = ("holds no data: the model was saved without its weights (e.g. without its external data "
            "file) or they were stripped")


def _raw_bytes(data_type: int, count: int) -> int | None:
    if data_type in _PACKED_4BIT:
        return (count + 1) // 2
    if data_type == onnx.TensorProto.STRING:
        return None
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    return count * itemsize


def _typed_values(data_type: int, count: int) -> int:
    if data_type in _PACKED_4BIT:
        return (count + 1) // 2
    if data_type in _COMPLEX:
        return 2 * count
    return count


# --------------------------------------------------------------------------- operator ranks
def rank_problem(node: ir.Node) -> str:
    """Why a weighted op's known input ranks are invalid ('' when they are fine or unknown)."""
    ranks = [len(v.shape) if v is not None and v.shape is not None else None for v in node.inputs[:2]]
    if len(ranks) < 2:
        return ""
    data, weight = ranks
    label = f"{node.op_type} {node.name or (node.outputs[0].name if node.outputs else '')!r}"
    if node.op_type in ("Conv", "ConvTranspose"):
        for which, rank in (("input", data), ("weight", weight)):
            if rank is not None and rank < 3:
                return (f"{label}: its {which} has rank {rank}; {node.op_type} needs rank >= 3 "
                        "(batch, channels, spatial dims)")
        if data is not None and weight is not None and data != weight:
            return f"{label}: its input has rank {data} but its weight rank {weight}; they must match"
    elif node.op_type == "Gemm":
        for which, rank in (("A", data), ("B", weight)):
            if rank is not None and rank != 2:
                return f"{label}: input {which} has rank {rank}; Gemm needs rank 2 (use MatMul for batched)"
    elif node.op_type == "MatMul":
        for which, rank in (("A", data), ("B", weight)):
            if rank == 0:
                return f"{label}: input {which} is a scalar (rank 0); MatMul needs rank >= 1"
    return ""


def check_weighted_ranks(graph: ir.Graph, origin: str) -> None:
    """Raise :class:`ModelLoadError` for the first weighted op whose known input ranks are invalid."""
    for node in graph:
        if node.domain not in ("", "ai.onnx"):
            continue
        problem = rank_problem(node)
        if problem:
            raise ModelLoadError(f"{origin} is not a valid ONNX model: {problem}")

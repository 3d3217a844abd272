"""Checks at load that turn malformed models into one-line errors before any numpy or onnx call sees them.

* :func:`check_graph_wiring`: every value a node reads is defined, and defined once;
* :func:`check_tensor_data`: every initializer and Constant tensor holds as many values as its dims say
  (a model saved without its weights declares them with dims and no data);
* :func:`check_weighted_ranks`: Conv/ConvTranspose/Gemm/MatMul inputs whose shapes are known have a rank
  and channel/inner dimensions the operator accepts (a rank-2 Conv or a weight for other channels would
  otherwise be compiled into a model that fails at run time). Shapes known only after shape inference are
  checked again by place-qdq.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir

from qdq_compiler.errors import ModelLoadError
from qdq_compiler.ir.op_facts import describe_node, describe_node_proto, gemm_transposes_a, gemm_transposes_b

__all__ = ["check_graph_wiring", "check_tensor_data", "check_weighted_ranks", "rank_problem"]

# data types packed two values per byte
_PACKED_4BIT = {
    getattr(onnx.TensorProto, name)
    for name in ("INT4", "UINT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)
}
# raw_data longer than this is not measured: Python protobuf copies the bytes to tell their length
RAW_LENGTH_CHECK_LIMIT = 64 << 20
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


def check_graph_wiring(proto: onnx.ModelProto, origin: str) -> None:
    """Raise :class:`ModelLoadError` when a main-graph node reads a value nothing defines, or a value is
    defined twice (by two nodes, or by a node and an input/initializer)."""
    graph = proto.graph
    defined: dict[str, str] = {}
    for value in graph.input:
        defined.setdefault(value.name, "a graph input")
    for tensor in graph.initializer:
        defined.setdefault(tensor.name, "an initializer")
    for node in graph.node:
        label = describe_node_proto(node)
        for name in node.output:
            if name and name in defined:
                raise ModelLoadError(
                    f"{origin} is not a valid ONNX model: value {name!r} is defined twice "
                    f"(by {defined[name]} and by {label})"
                )
            if name:
                defined[name] = label
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                label = describe_node_proto(node)
                raise ModelLoadError(
                    f"{origin} is not a valid ONNX model: {label} reads {name!r}, which no "
                    "node, graph input or initializer defines"
                )
    for value in graph.output:
        if value.name not in defined:
            raise ModelLoadError(
                f"{origin} is not a valid ONNX model: graph output {value.name!r} is never produced"
            )


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
    if any(dim < 0 for dim in tensor.dims):
        return "has a negative dimension"
    count = math.prod(tensor.dims)
    if tensor.HasField("raw_data"):
        expected = _raw_bytes(tensor.data_type, count)
        if expected is not None and expected > RAW_LENGTH_CHECK_LIMIT:
            return ""  # reading the length copies the bytes (protobuf): checked for smaller tensors only
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


_NO_DATA = (
    "holds no data: the model was saved without its weights (e.g. without its external data "
    "file) or they were stripped"
)


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


# --------------------------------------------------------------------------- weighted-op shapes
_RANK_CHECKED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})  # the ops rank_problem knows


def rank_problem(node: ir.Node) -> str:
    """Why a weighted op's known input ranks or channel counts are invalid ('' when fine or unknown)."""
    if node.op_type not in _RANK_CHECKED_OPS or len(node.inputs) < 2:
        return ""
    shapes = [_dims(v) for v in node.inputs]
    data, weight = shapes[0], shapes[1]
    if node.op_type in ("Conv", "ConvTranspose"):
        problem = _conv_problem(node, data, weight, shapes[2] if len(shapes) > 2 else None)
    elif node.op_type == "Gemm":
        problem = _gemm_problem(node, data, weight)
    elif node.op_type == "MatMul":
        problem = _matmul_problem(data, weight)
    else:
        problem = ""
    return f"{describe_node(node)}: {problem}" if problem else ""


def _dims(value: ir.Value | None) -> tuple[int | None, ...] | None:
    """The shape of ``value`` with None for symbolic dims (None when the rank is unknown)."""
    if value is None or value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in value.shape)


def _conv_problem(node: ir.Node, data: tuple | None, weight: tuple | None, bias: tuple | None) -> str:
    op = node.op_type
    for which, shape in (("input", data), ("weight", weight)):
        if shape is not None and len(shape) < 3:
            return f"its {which} has rank {len(shape)}; {op} needs rank >= 3 (batch, channels, spatial dims)"
    if data is None or weight is None:
        return ""
    if len(data) != len(weight):
        return f"its input has rank {len(data)} but its weight rank {len(weight)}; they must match"
    group_attr = node.attributes.get("group")
    group = group_attr.as_int() if group_attr is not None else 1
    channels = data[1]
    if op == "Conv":
        per_group, outputs = weight[1], weight[0]
    else:
        per_group = weight[0] // group if weight[0] is not None and group > 0 else None
        outputs = weight[1] * group if weight[1] is not None else None
    if channels is not None and per_group is not None and op == "Conv" and channels != per_group * group:
        return (
            f"its input has {channels} channels but its weight {list(weight)} with group={group} "
            f"expects {per_group * group}"
        )
    if channels is not None and op == "ConvTranspose" and weight[0] is not None and channels != weight[0]:
        return f"its input has {channels} channels but its weight {list(weight)} expects {weight[0]}"
    if bias is not None and outputs is not None and bias != (outputs,):
        return f"its bias has shape {list(bias)} but the layer has {outputs} output channels"
    return _conv_attribute_problem(node, weight)


_SPATIAL_ATTRIBUTES = (  # a Conv's spatial attributes and how many values each takes per spatial dim
    ("strides", 1),
    ("dilations", 1),
    ("kernel_shape", 1),
    ("pads", 2),
    ("output_padding", 1),
)


def _conv_attribute_problem(node: ir.Node, weight: tuple) -> str:
    """Spatial attributes whose length or values do not fit the weight's spatial dims."""
    spatial = len(weight) - 2
    attributes = node.attributes
    for name, per_dim in _SPATIAL_ATTRIBUTES:
        attribute = attributes.get(name)
        if attribute is None:
            continue
        values = attribute.as_ints()
        length = per_dim * spatial
        if len(values) != length:
            shown = list(values)
            return f"{name}={shown} has {len(shown)} values; the {spatial}-D {node.op_type} needs {length}"
        if not values:
            continue
        if name in ("strides", "dilations") and min(values) < 1:
            return f"{name}={list(values)} must be >= 1"
        if name in ("pads", "output_padding") and min(values) < 0:
            return f"{name}={list(values)} must be >= 0"
        if name == "kernel_shape" and tuple(values) != weight[2:] and None not in weight[2:]:
            return f"kernel_shape={list(values)} differs from the weight's spatial dims {list(weight[2:])}"
    return ""


def _gemm_problem(node: ir.Node, data: tuple | None, weight: tuple | None) -> str:
    for which, shape in (("A", data), ("B", weight)):
        if shape is not None and len(shape) != 2:
            return f"input {which} has rank {len(shape)}; Gemm needs rank 2 (use MatMul for batched)"
    if data is None or weight is None:
        return ""
    k_a = data[0] if gemm_transposes_a(node) else data[1]
    k_b = weight[1] if gemm_transposes_b(node) else weight[0]
    if k_a is not None and k_b is not None and k_a != k_b:
        return f"A {list(data)} and B {list(weight)} disagree on the inner dimension ({k_a} vs {k_b})"
    return ""


def _matmul_problem(data: tuple | None, weight: tuple | None) -> str:
    for which, shape in (("A", data), ("B", weight)):
        if shape is not None and len(shape) == 0:
            return f"input {which} is a scalar (rank 0); MatMul needs rank >= 1"
    if data is None or weight is None:
        return ""
    k_a, k_b = data[-1], (weight[-2] if len(weight) >= 2 else weight[0])
    if k_a is not None and k_b is not None and k_a != k_b:
        return f"A {list(data)} and B {list(weight)} disagree on the inner dimension ({k_a} vs {k_b})"
    return ""


def check_weighted_ranks(graph: ir.Graph, origin: str) -> None:
    """Raise :class:`ModelLoadError` for the first weighted op whose known input shapes are invalid."""
    for node in graph:
        if node.domain not in ("", "ai.onnx"):
            continue
        problem = rank_problem(node)
        if problem:
            raise ModelLoadError(f"{origin} is not a valid ONNX model: {problem}")

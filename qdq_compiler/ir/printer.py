"""Deterministic textual dump of the IR: the golden-file format.

One line per node in stable topological order, attributes sorted, small tensors (scales, zero-points)
printed exactly, large tensors as dtype/shape/hash/min/max, anonymous values numbered, no addresses.
qdqc's state (``ir/state.py``) shows too: a tensor's after its type (``%t: float[1,8] (amax 2.5)``), the
model's in its ``meta`` lines, a JSON list or object one entry per line.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.editing import topological_sort
from qdq_compiler.ir.state import STATE_PREFIX

# Tensors with at most this many elements are printed value by value.
SMALL_TENSOR_ELEMENTS = 16


class _ValueNamer:
    """Gives each value a printable name; anonymous ones are numbered in order of appearance."""

    def __init__(self) -> None:
        self._anonymous: dict[int, str] = {}

    def __call__(self, value: ir.Value | None) -> str:
        if value is None:
            return "None"
        if value.name:
            return "%" + value.name
        key = id(value)
        if key not in self._anonymous:
            self._anonymous[key] = f"%{len(self._anonymous)}"
        return self._anonymous[key]


def format_type(value: ir.Value) -> str:
    """`float32[1,3,64,64]`, `float32[N,?]`, or `?` when the type is unknown."""
    dtype = value.dtype
    dtype_text = _dtype_name(dtype) if dtype is not None else "?"
    if value.shape is None:
        return dtype_text
    dims = ",".join(str(d) if isinstance(d, int) else (str(d.value) if d.value else "?") for d in value.shape)
    return f"{dtype_text}[{dims}]"


def _typed(value: ir.Value, namer: _ValueNamer) -> str:
    """`%name: type`, followed by the value's qdqc state: `%t: float[1,8] (amax 2.5)`."""
    state = [
        f"{key[len(STATE_PREFIX) :]} {value.metadata_props[key]}"
        for key in sorted(value.metadata_props)
        if key.startswith(STATE_PREFIX)
    ]
    suffix = f" ({', '.join(state)})" if state else ""
    return f"{namer(value)}: {format_type(value)}{suffix}"


def _dtype_name(dtype: ir.DataType) -> str:
    """ONNX element type name, lower case: float, float16, int8, int64."""
    return dtype.name.lower()


def _numpy_dtype_name(dtype: np.dtype) -> str:
    """The ONNX name of a numpy dtype, so types and constants print alike."""
    try:
        return _dtype_name(ir.DataType.from_numpy(dtype))
    except (TypeError, ValueError):
        return str(dtype)


def format_scalar(number: float | int | np.generic) -> str:
    """Exact, shortest round-trip text of a number in its own precision."""
    if isinstance(number, (np.floating,)):
        return (
            np.format_float_positional(number, unique=True, trim="-") if np.isfinite(number) else str(number)
        )
    if isinstance(number, float):
        return repr(number)
    return str(int(number)) if not isinstance(number, (bool, np.bool_)) else str(bool(number)).lower()


def format_array(array: np.ndarray) -> str:
    """Small arrays exactly; large ones as dtype/shape/sha256 prefix/min/max."""
    dtype = _numpy_dtype_name(array.dtype)
    shape = "x".join(str(d) for d in array.shape) or "scalar"
    if array.size <= SMALL_TENSOR_ELEMENTS:
        flat = array.reshape(-1)
        if array.dtype.kind in "fiub":
            items = ", ".join(format_scalar(x) for x in flat)
        else:
            items = ", ".join(repr(x) for x in flat.tolist())
        body = items if array.ndim == 0 else f"[{items}]"
        return f"{dtype}<{shape}> {body}"
    digest = hashlib.sha256(np.asarray(array, order="C").tobytes()).hexdigest()[:12]
    if array.dtype.kind in "fiub" and array.size:
        finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
        low = format_scalar(finite.min()) if finite.size else "nan"
        high = format_scalar(finite.max()) if finite.size else "nan"
        return f"{dtype}<{shape}> sha256:{digest} min={low} max={high}"
    return f"{dtype}<{shape}> sha256:{digest}"


def format_attribute(attr: ir.Attr, namer: _ValueNamer, indent: str) -> str:
    """One attribute's value as text; subgraphs are printed inline, indented."""
    kind = attr.type
    if kind == ir.AttributeType.TENSOR:
        return format_array(attr.as_tensor().numpy())
    if kind == ir.AttributeType.GRAPH:
        return "{\n" + _graph_body(attr.as_graph(), namer, indent + "    ") + indent + "}"
    if kind == ir.AttributeType.GRAPHS:
        return (
            "["
            + ", ".join(
                "{\n" + _graph_body(g, namer, indent + "    ") + indent + "}" for g in attr.as_graphs()
            )
            + "]"
        )
    if kind == ir.AttributeType.FLOAT:
        return format_scalar(np.float32(attr.as_float()))
    if kind == ir.AttributeType.FLOATS:
        return "[" + ", ".join(format_scalar(np.float32(x)) for x in attr.as_floats()) + "]"
    if kind == ir.AttributeType.INTS:
        return "[" + ", ".join(str(x) for x in attr.as_ints()) + "]"
    if kind == ir.AttributeType.STRING:
        return repr(attr.as_string())
    if kind == ir.AttributeType.STRINGS:
        return "[" + ", ".join(repr(x) for x in attr.as_strings()) + "]"
    if kind == ir.AttributeType.INT:
        return str(attr.as_int())
    return f"<{kind.name.lower()}>"


def _node_line(node: ir.Node, namer: _ValueNamer, indent: str) -> str:
    outputs = ", ".join(_typed(v, namer) for v in node.outputs)
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
    inputs = ", ".join(namer(v) for v in node.inputs)
    attrs = ""
    if node.attributes:
        parts = [
            f"{name}={format_attribute(node.attributes[name], namer, indent)}"
            for name in sorted(node.attributes)
        ]
        attrs = " {" + ", ".join(parts) + "}"
    label = f"  # {node.name}" if node.name else ""
    return f"{indent}{outputs} = {op}({inputs}){attrs}{label}\n"


def _graph_body(graph: ir.Graph, namer: _ValueNamer, indent: str) -> str:
    lines: list[str] = []
    for value in graph.inputs:
        if not value.is_initializer():
            lines.append(f"{indent}input {_typed(value, namer)}\n")
    for name in sorted(graph.initializers):
        value = graph.initializers[name]
        tensor = value.const_value
        text = format_array(tensor.numpy()) if tensor is not None else "<no data>"
        lines.append(f"{indent}const {namer(value)} = {text}\n")
    for node in graph:
        lines.append(_node_line(node, namer, indent))
    for value in graph.outputs:
        lines.append(f"{indent}output {_typed(value, namer)}\n")
    return "".join(lines)


def _meta_lines(key: str, text: str) -> str:
    """`meta key = 'text'`; qdqc state holding a JSON list or object gets one entry per line."""
    state = None
    if key.startswith(STATE_PREFIX) and text[:1] in "[{":
        try:
            state = json.loads(text)
        except ValueError:
            state = None
    if isinstance(state, list):
        items = [json.dumps(item, sort_keys=True) for item in state]
    elif isinstance(state, dict):
        items = [f"{json.dumps(name)}: {json.dumps(item, sort_keys=True)}" for name, item in state.items()]
    else:
        return f"meta {key} = {text!r}\n"
    opening, closing = ("[", "]") if isinstance(state, list) else ("{", "}")
    return f"meta {key} = {opening}\n" + "".join(f"    {item}\n" for item in items) + f"{closing}\n"


def dump(model: ir.Model, sort: bool = True) -> str:
    """The model as deterministic text. With `sort`, the graph is first put in stable topological order."""
    if sort:
        topological_sort(model.graph)
    opsets = ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in sorted(model.opset_imports.items()))
    header = [f"model ir_version={model.ir_version} opsets=[{opsets}]\n"]
    for key in sorted(model.metadata_props):
        header.append(_meta_lines(key, model.metadata_props[key]))
    return "".join(header) + _graph_body(model.graph, _ValueNamer(), "")

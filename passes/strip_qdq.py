"""strip-qdq: turn a model quantized by another tool back into a float model, keeping its calibration.

For models that arrive already quantized (onnxruntime's ``quantize_static``, Model Optimizer, a QAT export)
with Q/DQ where TensorRT cannot fuse them (biases as INT32, Q/DQ around the decode head, Concat inputs with
different scales). After this pass the usual placement runs, and ``import-scales`` gives qdqc's Q/DQ the
imported scales instead of calibrating again:

- ``DequantizeLinear`` of a constant (weights, INT32 biases) becomes the float constant it computes,
  ``(q - zero_point) * scale``; the following ``place-qdq`` quantizes the weights again per channel;
- an activation ``QuantizeLinear -> DequantizeLinear`` pair is removed and the tensor reads float again; the
  pair's range is kept as the amax of the symmetric INT8 grid covering it (see ``quant/imported.py``);
- a removed pair whose range starts at exactly 0 (zero-point at the type's lowest code) clamped its tensor
  at 0: onnxruntime's ``quantize_static`` with asymmetric activations deletes a Relu or Clip after a Conv or
  Add and leaves the clamp to such a pair. A Relu takes the pair's place, or ``Clip(0, top)`` when the
  pair's top is a whole number (Relu6: see ``quant/imported.py``). Not where the tensor cannot be negative
  anyway (output of Relu, Sigmoid, Clip(min >= 0), an even Pow, ..., or of pooling/data movement of such
  tensors: a Relu there would be redundant), nor on a graph input (an image in [0, 1] gets the same
  zero-point; onnxruntime never folds an op there);
- likewise a pair whose range straddles 0 with whole-number ends (Clip(-1, 1) folded away) gets
  ``Clip(bottom, top)`` back, or only the bound calibration saw, unless the tensor is
  already inside it (a Tanh or Clip output);
- ``Q -> DQ`` of a float constant (fake-quantized weights) is removed, leaving the float constant.

A Q that feeds anything but DequantizeLinear, or a DQ of neither a constant nor a Q, is refused: that is
integer data at the graph boundary, which a float pipeline cannot take over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.editing import (
    NameScope,
    add_constant,
    constant_array,
    eliminate_dead_code,
    replace_value,
)
from qdq_compiler.ir.op_facts import default_opset, is_weight_quantizer, node_label, qdq_axis, quantized_type
from qdq_compiler.ir.qdq import is_dequantize, is_quantize, scale_of, zero_point_of
from qdq_compiler.ir.state import clear_value_state
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.activation_scales import AMAX_STATE
from qdq_compiler.quant.decisions import forget_decisions
from qdq_compiler.quant.float_view import dequantize
from qdq_compiler.quant.imported import covering_amax, implied_clamp, record_imported_amax

# Ops whose output is >= 0 whatever their input, and ops that keep every value of their data inputs'
# range (so the output is >= 0 when those inputs are).
NONNEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "Softmax", "HardSigmoid", "Abs", "Exp", "Softplus"})
RANGE_KEEPING_OPS = frozenset(
    {
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Concat",
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Resize",
        "Upsample",
        "Slice",
        "Split",
        "Gather",
        "Add",
        "Mul",
        "Max",
        "Min",
    }
)


@register_pass
class StripQDQ(Pass):
    """Remove every Q/DQ; fold dequantized constants to float; remember activation ranges."""

    name = "strip-qdq"
    summary = "Remove an already-quantized model's Q/DQ: constants back to float, activation scales kept."

    @dataclass(frozen=True)
    class Options:
        pass

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        _refuse_contrib_qdq(graph)
        result = PassResult(modified=False)
        stats = result.statistics
        for node in list(graph):
            if is_dequantize(node) and (quantized := constant_array(node.inputs[0])) is not None:
                _fold_dequantized_constant(graph, node, quantized)
                stats["num-constants-dequantized"] += 1
        ranges: dict[int, tuple[ir.Value, float]] = {}  # by tensor: names may change while pairs go
        names = NameScope(graph)  # one scan for every clamp inserted below
        for node in list(graph):
            if is_quantize(node):
                constant = is_weight_quantizer(node)
                source, amax, clamped = _remove_pair(graph, node, names)
                stats["num-clamps-restored"] += clamped
                if constant:
                    stats["num-fake-quantized-constants"] += 1
                else:
                    known = ranges.get(id(source))
                    ranges[id(source)] = (source, amax if known is None else max(known[1], amax))
        forget_decisions(model)  # the model is float again: an earlier compile's state no longer holds
        clear_value_state(graph, AMAX_STATE)
        record_imported_amax(model, {value.name or "": amax for value, amax in ranges.values()})
        stats["num-activation-scales-kept"] = len(ranges)
        if any(stats.values()):
            eliminate_dead_code(graph)
            result.modified = True
        for node in graph:
            if is_dequantize(node):
                data = node.inputs[0]
                data_name = data.name if data is not None else None
                raise QdqcError(
                    f"strip-qdq: DequantizeLinear {node_label(node)!r} reads {data_name!r}, "
                    "which is neither a constant nor a QuantizeLinear output (integer graph input?): "
                    "not supported"
                )
        return result


def _refuse_contrib_qdq(graph: ir.Graph) -> None:
    for node in graph:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain not in ("", "ai.onnx"):
            raise QdqcError(
                f"strip-qdq: {node.op_type} {node_label(node)!r} is from domain {node.domain!r} (onnxruntime "
                "contrib ops): not supported; quantize with standard ONNX Q/DQ (opset 21 for 16-bit types)"
            )


def _check_not_blocked(node: ir.Node) -> None:
    block = node.attributes.get("block_size")
    if block is not None and block.as_int() > 0:
        raise QdqcError(
            f"strip-qdq: {node.op_type} {node_label(node)!r} uses blocked quantization: not supported"
        )


def _fold_dequantized_constant(graph: ir.Graph, dq: ir.Node, quantized: np.ndarray) -> None:
    """Replace ``DQ(constant)``, the constant being ``quantized``, by the float constant it computes (the DQ's
    output name is kept)."""
    _check_not_blocked(dq)
    scale, zero = _constant_parameters(dq)
    values = dequantize(quantized, scale, zero, qdq_axis(dq))
    output = dq.outputs[0]
    constant = add_constant(graph, values, output.name or f"{input_of(dq, 0).name}_float")
    output.replace_all_uses_with(constant, replace_graph_outputs=True)


def _constant_parameters(node: ir.Node) -> tuple[np.ndarray, np.ndarray | None]:
    """The scale and zero-point of a Q or DQ; both must be constants, the scale positive and finite."""
    scale = scale_of(node)
    has_zero = len(node.inputs) > 2 and node.inputs[2] is not None
    zero = zero_point_of(node)
    if scale is None or (has_zero and zero is None):
        raise QdqcError(
            f"strip-qdq: {node.op_type} {node_label(node)!r} has a scale or zero-point that is "
            "not a constant: not supported"
        )
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise QdqcError(f"strip-qdq: {node.op_type} {node_label(node)!r} has a scale that is not positive")
    return scale, zero


def _quantized_dtype(q: ir.Node) -> np.dtype:
    """The integer type a Q produces: its zero-point's type, else `output_dtype`, else UINT8 (ONNX)."""
    dtype = quantized_type(q)
    assert dtype is not None, "a QuantizeLinear always has a quantized type"
    return np.dtype(dtype.numpy())


def _remove_pair(graph: ir.Graph, q: ir.Node, names: NameScope) -> tuple[ir.Value, float, bool]:
    """Make the DQs after ``q`` disappear; return the float tensor their users now read, the pair's covering
    amax, and whether a Relu or Clip re-creates the clamp the pair applied."""
    _check_not_blocked(q)
    source = input_of(q, 0)
    scale, zero = _constant_parameters(q)
    quantized = q.outputs[0]
    users = [user for user, _ in quantized.uses()]
    if quantized.is_graph_output() or not all(is_dequantize(user) for user in users):
        raise QdqcError(
            f"strip-qdq: QuantizeLinear {node_label(q)!r} feeds integer data to something other than "
            "DequantizeLinear: not supported"
        )
    for dq in users:
        dq_scale, dq_zero = _constant_parameters(dq)
        same_zero = (zero is None and dq_zero is None) or (
            zero is not None and dq_zero is not None and np.array_equal(zero, dq_zero)
        )
        if not (np.array_equal(scale, dq_scale) and same_zero):
            raise QdqcError(
                f"strip-qdq: QuantizeLinear {node_label(q)!r} and DequantizeLinear "
                f"{node_label(dq)!r} use different scales or zero-points: not a plain pair"
            )
    try:
        amax = covering_amax(scale, zero, _quantized_dtype(q))
    except ValueError as exc:
        raise QdqcError(f"strip-qdq: QuantizeLinear {node_label(q)!r}: {exc}") from None
    clamp = implied_clamp(scale, zero, _quantized_dtype(q))
    clamped = clamp is not None and constant_array(source) is None and not _already_clamped(source, clamp)
    if clamp is not None and clamped:
        source = _insert_clamp(graph, q, clamp, scale.dtype, names)
    for dq in users:
        output = dq.outputs[0]
        if output.is_graph_output() and (source.is_graph_output() or source.is_graph_input()):
            # two graph boundary values cannot merge: an Identity keeps both names
            identity = ir.Node(
                "", "Identity", [source], outputs=[ir.Value(name=None)], name=f"{q.name}_identity"
            )
            graph.insert_before(dq, identity)
            names.reserve_node(identity.name)
            replace_value(output, identity.outputs[0], graph)
        elif output.is_graph_output():
            replace_value(output, source, graph)  # the graph output keeps its name
        else:
            output.replace_all_uses_with(source)
    return source, amax, clamped


def _already_clamped(value: ir.Value, clamp: tuple[float | None, float | None]) -> bool:
    """Whether ``value`` already lies in the clamp's range by construction (or is a graph input, where a clamp
    never was folded): a Relu or Clip there would be redundant."""
    bottom, top = clamp
    if bottom == 0.0:
        return _nonnegative(value)
    producer = value.producer()
    if producer is None:
        return value.is_graph_input()
    if producer.op_type == "Tanh":
        return (bottom is None or bottom <= -1.0) and (top is None or top >= 1.0)
    if producer.op_type == "Clip" and len(producer.inputs) > 2:
        low, high = (constant_array(v) if v is not None else None for v in producer.inputs[1:3])
        low_ok = bottom is None or (low is not None and bool(np.all(low >= bottom)))
        high_ok = top is None or (high is not None and bool(np.all(high <= top)))
        return low_ok and high_ok
    return False


def _nonnegative(value: ir.Value, depth: int = 0) -> bool:
    """Whether ``value`` is >= 0 by construction, or a graph input (where a clamp never was folded)."""
    producer = value.producer()
    if producer is None:
        return value.is_graph_input()
    if producer.domain not in ("", "ai.onnx") or depth > 64:
        return False
    op = producer.op_type
    if is_dequantize(producer):  # a pair not removed yet
        pair_output = producer.inputs[0]
        quantize = pair_output.producer() if pair_output is not None else None
        if is_quantize(quantize):
            return _nonnegative(input_of(quantize, 0), depth + 1)
    if op in NONNEGATIVE_OPS:
        return True
    if op == "Pow":
        exponent = constant_array(producer.inputs[1])
        return exponent is not None and exponent.size == 1 and float(exponent) % 2 == 0
    if op == "Clip":
        low = constant_array(producer.inputs[1]) if len(producer.inputs) > 1 else None
        return (low is not None and bool(np.all(low >= 0))) or _nonnegative(input_of(producer, 0), depth + 1)
    if op in RANGE_KEEPING_OPS:
        data = (
            producer.inputs[:1]
            if op in ("Reshape", "Slice", "Gather", "Resize", "Upsample")
            else (producer.inputs)
        )
        return all(v is not None and (_nonnegative(v, depth + 1) or _nonnegative_constant(v)) for v in data)
    return False


def _nonnegative_constant(value: ir.Value) -> bool:
    array = constant_array(value)
    return array is not None and bool(np.all(array >= 0))


def _insert_clamp(
    graph: ir.Graph,
    q: ir.Node,
    clamp: tuple[float | None, float | None],
    dtype: np.dtype,
    names: NameScope,
) -> ir.Value:
    """A Relu (no top) or ``Clip(bottom, top)`` on the input of ``q``, read by ``q`` instead; returns its
    output.

    The output takes the tensor's name when ``q`` was its only reader: onnxruntime gave the producer the
    name of the Relu/Clip it deleted, so the float model's names come back.
    """
    source = input_of(q, 0)
    base = source.name or q.name or "clamped"
    op = "Relu" if clamp == (0.0, None) else "Clip"
    limits = np.finfo(dtype)  # a missing bound: the type's own end
    bounds = (
        float(limits.min) if clamp[0] is None else clamp[0],
        float(limits.max) if clamp[1] is None else clamp[1],
    )
    clamped = ir.Value(name=names.value(f"{base}_{op.lower()}"), shape=source.shape, type=source.type)
    node_name = names.node(f"{base}_{op.lower()}")
    if op == "Relu":
        node = ir.Node("", "Relu", [source], outputs=[clamped], name=node_name)
    elif default_opset(graph.opset_imports, missing=1) < 11:  # bounds as attributes
        attributes = [ir.AttrFloat32("min", bounds[0]), ir.AttrFloat32("max", bounds[1])]
        node = ir.Node("", "Clip", [source], attributes=attributes, outputs=[clamped], name=node_name)
    else:
        low, high = (
            add_constant(graph, np.array(bound, dtype=dtype), names.value(f"{base}_clip_{side}"))
            for bound, side in zip(bounds, ("min", "max"), strict=True)
        )
        node = ir.Node("", "Clip", [source, low, high], outputs=[clamped], name=node_name)
    graph.insert_before(q, node)
    q.replace_input_with(0, clamped)
    if len(source.uses()) == 1 and not source.is_graph_output() and source.name:
        name = source.name
        source.name = names.value(f"{name}_before_{op.lower()}")
        clamped.name = name
    return clamped

"""legalize-trt: make the model what the TensorRT generation expects.

trt10: the float graph with INT8 Q/DQ is what TensorRT 10 builds (weakly typed with INT8+FP16 flags, or
strongly typed); nothing changes.
trt11: TensorRT 11 is always strongly typed, so the ONNX must carry the whole precision plan: the float
remainder runs in FP16. Float32 initializers become FP16 (Q/DQ scales too: a DequantizeLinear then outputs
FP16), every float32 value is typed FP16, and Casts keep the graph inputs and outputs float32 unless
`io-fp16` is set. Inputs that ONNX requires in float32 (Resize scales and roi) stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.editing import NameScope
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass

# (op_type, input index) pairs whose type ONNX fixes to float32 whatever the data type.
FLOAT32_ONLY_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1)})
FP16_MIN_OPSET = 19


@register_pass
class LegalizeTRT(Pass):
    """Target-specific final form; see the module docstring."""

    name = "legalize-trt"
    summary = "Legalize for the TensorRT target (trt11: strongly typed, float remainder in FP16)."

    @dataclass(frozen=True)
    class Options:
        target: str = "trt10"
        io_fp16: bool = False

        def __post_init__(self) -> None:
            if self.target not in ("trt10", "trt11"):
                raise ValueError(f"unknown target '{self.target}' (valid: trt10, trt11)")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        if self.options.target == "trt10":
            return PassResult(modified=False)
        opset = model.opset_imports.get("", 0)
        if opset < FP16_MIN_OPSET:
            raise ValueError(
                f"trt11 needs opset >= {FP16_MIN_OPSET} for FP16 Q/DQ (model has {opset}); "
                f"run upgrade-opset{{min={FP16_MIN_OPSET}}} first"
            )
        result = PassResult(modified=False)
        graph = model.graph
        keep_float32 = _float32_only_values(graph)
        float32_outputs = {id(value) for value in graph.outputs if value.dtype == ir.DataType.FLOAT}
        result.statistics["num-initializers-fp16"] = _convert_initializers(graph, keep_float32)
        result.statistics["num-casts-fp16"] = _retarget_casts(graph)
        result.statistics["num-values-fp16"] = _retype_values(graph, keep_float32)
        if not self.options.io_fp16:
            result.statistics["num-io-casts"] = _keep_io_float32(graph, float32_outputs)
        result.modified = any(result.statistics.values())
        return result


def _float32_only_values(graph: ir.Graph) -> set[int]:
    """Values feeding inputs ONNX requires in float32."""
    keep = set()
    for node in graph:
        for index, value in enumerate(node.inputs):
            if value is not None and (node.op_type, index) in FLOAT32_ONLY_INPUTS:
                keep.add(id(value))
    return keep


def _convert_initializers(graph: ir.Graph, keep: set[int]) -> int:
    converted = 0
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is None or tensor.dtype != ir.DataType.FLOAT or id(value) in keep or value.is_graph_input():
            continue
        value.const_value = ir.tensor(tensor.numpy().astype(np.float16), name=value.name)
        value.type = ir.TensorType(ir.DataType.FLOAT16)
        converted += 1
    return converted


def _retype_values(graph: ir.Graph, keep: set[int]) -> int:
    retyped = 0
    for node in graph:
        to = node.attributes.get("to")
        if node.op_type == "Cast" and to is not None and to.as_int() == ir.DataType.FLOAT:
            continue  # an output cast back to float32 (the only float32 casts left)
        for value in node.outputs:
            if value.dtype == ir.DataType.FLOAT and id(value) not in keep:
                value.type = ir.TensorType(ir.DataType.FLOAT16)
                retyped += 1
    return retyped


def _retarget_casts(graph: ir.Graph) -> int:
    """Casts to float32 inside the graph now cast to float16 (those feeding graph outputs stay)."""
    changed = 0
    for node in graph:
        to = node.attributes.get("to")
        if node.outputs[0].is_graph_output():
            continue
        if node.op_type == "Cast" and to is not None and to.as_int() == ir.DataType.FLOAT:
            node.attributes["to"] = ir.AttrInt64("to", ir.DataType.FLOAT16)
            changed += 1
    return changed


def _keep_io_float32(graph: ir.Graph, float32_outputs: set[int]) -> int:
    """Cast float32 graph inputs to FP16 on entry and the outputs that were float32 back on exit.

    A float16 model keeps its float16 inputs and outputs: the interface stays the source model's.
    """
    names = NameScope(graph)
    casts = 0
    for value in graph.inputs:
        users = [user for user, _ in value.uses()]
        if value.dtype != ir.DataType.FLOAT or all(_casts_to_fp16(user) for user in users):
            continue
        cast = _cast(
            value, ir.DataType.FLOAT16, names.value(f"{value.name}_fp16"), names.node(f"{value.name}_to_fp16")
        )
        cast_out = cast.outputs[0]
        for user, index in list(value.uses()):
            if user is not cast:
                user.replace_input_with(index, cast_out)
        graph.insert_before(next(iter(graph)), cast)
        casts += 1
    for position, value in enumerate(list(graph.outputs)):
        if value.dtype != ir.DataType.FLOAT16 or id(value) not in float32_outputs:
            continue
        name = value.name
        value.name = names.value(f"{name}_fp16")
        cast = _cast(value, ir.DataType.FLOAT, name, names.node(f"{name}_to_fp32"))
        output = cast.outputs[0]
        graph.append(cast)
        graph.outputs[position] = output
        casts += 1
    return casts


def _casts_to_fp16(node: ir.Node) -> bool:
    to = node.attributes.get("to")
    return node.op_type == "Cast" and to is not None and to.as_int() == ir.DataType.FLOAT16


def _cast(value: ir.Value, dtype: ir.DataType, output_name: str, node_name: str) -> ir.Node:
    """A Cast of `value` to `dtype` (not yet in the graph), its output named `output_name`."""
    output = ir.Value(name=output_name, shape=value.shape, type=ir.TensorType(dtype))
    return ir.Node("", "Cast", [value], {"to": ir.AttrInt64("to", dtype)}, outputs=[output], name=node_name)

"""legalize-trt: make the model what the TensorRT generation expects.

trt10: the float graph with INT8 Q/DQ is what TensorRT 10 builds (weakly typed with INT8+FP16 flags, or
strongly typed); nothing changes.
trt11: TensorRT 11 is always strongly typed, so the ONNX must carry the whole precision plan: the float
remainder runs in FP16. Float32 initializers become FP16 (Q/DQ scales too: a DequantizeLinear then outputs
FP16), every float32 value is typed FP16, and Casts keep the graph inputs and outputs float32 unless
`io-fp16` is set, which makes the float32 graph inputs and outputs float16 (integer inputs keep their type;
a float16 model keeps its float16 inputs and outputs either way). Inputs that ONNX requires in float32
(Resize scales and roi) stay float32, graph inputs among them too.

The INT8 weight codes were computed with float32 scales, and scales below float16's normal range (6.1e-5:
weights of amax < 7.8e-3) round coarsely in float16 (by tens of percent near 6e-8). So a weight DQ's scale
becomes the nearest float16, or the next one up where the nearest is so much smaller that the largest
weight would clip at 127, and its codes are recomputed for that scale (in the normal range they do not
change): every weight stays within about one float16 step of its float value. Other positive scales
never round to 0 (they take float16's smallest step instead).

Either target is recorded in the model (targets/recipe.py: `qdq_compiler.target`, `qdq_compiler.io_fp16`),
so lint, explain and build read what the model was made for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.errors import PipelineError
from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.op_facts import FLOAT16_QDQ_MIN_OPSET, default_opset, qdq_axis
from qdq_compiler.ir.qdq import broadcast_scale, cast_scale, is_dequantize, is_quantize
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.grid import INT8_MAX
from qdq_compiler.rewrite import Rewriter
from qdq_compiler.targets.recipe import record_target

# (op_type, input index) pairs whose type ONNX fixes to float32 whatever the data type.
FLOAT32_ONLY_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1)})
FP16_MIN_OPSET = FLOAT16_QDQ_MIN_OPSET  # float16 Q/DQ
WEIGHT_MAX = INT8_MAX  # INT8 weights are symmetric, [-127, 127]


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

    def adjust_earlier_passes(self, earlier: list[Pass]) -> None:
        """trt11 needs opset 19 (FP16 Q/DQ): the one place that rule lives. Every upgrade-opset before this
        pass converts to at least 19 unless the text set a lower `min`, which is refused."""
        if self.options.target != "trt11":
            return
        for pass_ in earlier:
            if pass_.name != "upgrade-opset" or pass_.options.min >= FP16_MIN_OPSET:
                continue
            if "min" in pass_.explicit_options:
                asked = self.explicit_options.get("target", "legalize-trt{target=trt11}")
                raise PipelineError(
                    f"{pass_.explicit_options['min']} in the pipeline contradicts {asked}, which needs "
                    f"opset >= {FP16_MIN_OPSET} (FP16 Q/DQ)"
                )
            pass_.options = dataclasses.replace(pass_.options, min=FP16_MIN_OPSET)

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        if self.options.target == "trt10":
            return PassResult(modified=record_target(model, "trt10", io_fp16=False))  # trt10 keeps the I/O
        opset = default_opset(model.opset_imports)
        if opset < FP16_MIN_OPSET:
            raise ValueError(
                f"trt11 needs opset >= {FP16_MIN_OPSET} for FP16 Q/DQ (model has {opset}); "
                f"run upgrade-opset{{min={FP16_MIN_OPSET}}} first"
            )
        result = PassResult(modified=False)
        graph = model.graph
        keep_float32 = _float32_only_values(graph)
        result.statistics["num-weights-requantized-fp16"] = _requantize_for_fp16_scales(graph)
        float32_outputs = {id(value) for value in graph.outputs if value.dtype == ir.DataType.FLOAT}
        result.statistics["num-initializers-fp16"] = _convert_initializers(graph, keep_float32)
        result.statistics["num-casts-fp16"] = _retarget_casts(graph)
        result.statistics["num-values-fp16"] = _retype_values(graph, keep_float32)
        rewriter = Rewriter(graph)  # the naming scope of the casts inserted below
        if self.options.io_fp16:
            result.statistics["num-io-fp16"] = _io_fp16(rewriter)
        else:
            result.statistics["num-io-casts"] = _keep_io_float32(rewriter, float32_outputs)
        recorded = record_target(model, self.options.target, self.options.io_fp16)  # lint, build read it
        result.modified = recorded or any(result.statistics.values())
        return result


def _float32_only_values(graph: ir.Graph) -> set[int]:
    """Values feeding inputs ONNX requires in float32."""
    keep = set()
    for node in graph:
        for index, value in enumerate(node.inputs):
            if value is not None and (node.op_type, index) in FLOAT32_ONLY_INPUTS:
                keep.add(id(value))
    return keep


def _requantize_for_fp16_scales(graph: ir.Graph) -> int:
    """INT8 weights behind a DQ whose float32 scale changes in float16: codes recomputed for that scale."""
    requantized = 0
    for node in graph:
        if not is_dequantize(node) or node.inputs[0] is None or node.inputs[0].dtype != ir.DataType.INT8:
            continue
        codes_value, scale_value = input_of(node, 0), input_of(node, 1)
        codes, scale = constant_array(codes_value), constant_array(scale_value)
        if codes is None or scale is None or scale.dtype != np.float32:
            continue
        if not _sole_reader(node):
            continue
        scale16 = _float16_weight_scale(scale)
        scale_value.const_value = ir.tensor(scale16, name=scale_value.name)
        scale_value.type = ir.TensorType(ir.DataType.FLOAT16)
        axis = qdq_axis(node)
        old = broadcast_scale(scale.astype(np.float64), codes.ndim, axis)
        new = broadcast_scale(scale16.astype(np.float64), codes.ndim, axis)
        recoded = np.clip(np.rint(codes.astype(np.float64) * old / new), -WEIGHT_MAX, WEIGHT_MAX)
        recoded = recoded.astype(np.int8)
        if not np.array_equal(recoded, codes):
            codes_value.const_value = ir.tensor(recoded, name=codes_value.name)
            requantized += 1
    return requantized


def _float16_weight_scale(scale: np.ndarray) -> np.ndarray:
    """Each float32 weight scale as the nearest float16, or the next one up where the code 127 would clip."""
    rounded = cast_scale(scale, np.float16)
    clips = WEIGHT_MAX * scale.astype(np.float64) / rounded.astype(np.float64) >= WEIGHT_MAX + 0.5
    return np.where(clips, np.nextafter(rounded, np.float16(np.inf)), rounded).astype(np.float16)


def _sole_reader(dequantize: ir.Node) -> bool:
    """True when this DQ alone reads its INT8 constant and its scale (another reader would see new codes)."""
    codes, scale = input_of(dequantize, 0), input_of(dequantize, 1)
    if not (codes.is_initializer() and scale.is_initializer()):
        return False
    codes_users = codes.uses()
    scale_users = [user for user, _ in scale.uses() if not is_quantize(user)]
    return len(codes_users) == 1 and all(user is dequantize for user in scale_users)


def _convert_initializers(graph: ir.Graph, keep: set[int]) -> int:
    converted = 0
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is None or tensor.dtype != ir.DataType.FLOAT or id(value) in keep or value.is_graph_input():
            continue
        value.const_value = ir.tensor(cast_scale(tensor.numpy(), np.float16), name=value.name)
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


def _keep_io_float32(rewriter: Rewriter, float32_outputs: set[int]) -> int:
    """Cast float32 graph inputs to FP16 on entry and the outputs that were float32 back on exit.

    A float16 model keeps its float16 inputs and outputs: the interface stays the source model's.
    """
    graph, names = rewriter.graph, rewriter.names
    casts = sum(_cast_for_fp16_users(rewriter, value) for value in graph.inputs)
    for position, value in enumerate(list(graph.outputs)):
        if value.dtype != ir.DataType.FLOAT16 or id(value) not in float32_outputs:
            continue
        name = value.name or "output"
        value.name = names.value(f"{name}_fp16")
        cast = _cast(value, ir.DataType.FLOAT, name, names.node(f"{name}_to_fp32"))
        output = cast.outputs[0]
        rewriter.append(cast)
        graph.outputs[position] = output
        casts += 1
    return casts


def _io_fp16(rewriter: Rewriter) -> int:
    """FP16 graph I/O: float32 graph inputs become float16 (the outputs already are); integer inputs keep
    their type. An input that ONNX requires in float32 somewhere (Resize scales) stays float32 and is cast
    for its other users. Returns the number of inputs retyped or cast."""
    changed = 0
    for value in rewriter.graph.inputs:
        if value.dtype != ir.DataType.FLOAT:
            continue
        if any(_float32_only(user, index) for user, index in value.uses()):
            changed += _cast_for_fp16_users(rewriter, value)
        else:
            value.type = ir.TensorType(ir.DataType.FLOAT16)
            changed += 1
    return changed


def _float32_only(node: ir.Node, index: int) -> bool:
    return (node.op_type, index) in FLOAT32_ONLY_INPUTS


def _cast_for_fp16_users(rewriter: Rewriter, value: ir.Value) -> int:
    """Feed the FP16 users of the float32 graph input `value` through one Cast to FP16; 1 if one was added.

    Uses that ONNX requires in float32 (Resize scales) and Casts to FP16 keep reading `value`."""
    users = [
        (user, index)
        for user, index in value.uses()
        if not _float32_only(user, index) and not _casts_to_fp16(user)
    ]
    if value.dtype != ir.DataType.FLOAT or not users:
        return 0
    names = rewriter.names
    cast = _cast(
        value, ir.DataType.FLOAT16, names.value(f"{value.name}_fp16"), names.node(f"{value.name}_to_fp16")
    )
    for user, index in users:
        rewriter.set_input(user, index, cast.outputs[0])
    rewriter.insert_before(next(iter(rewriter.graph)), cast)
    return 1


def _casts_to_fp16(node: ir.Node) -> bool:
    to = node.attributes.get("to")
    return node.op_type == "Cast" and to is not None and to.as_int() == ir.DataType.FLOAT16


def _cast(value: ir.Value, dtype: ir.DataType, output_name: str, node_name: str) -> ir.Node:
    """A Cast of `value` to `dtype` (not yet in the graph), its output named `output_name`."""
    output = ir.Value(name=output_name, shape=value.shape, type=ir.TensorType(dtype))
    return ir.Node("", "Cast", [value], {"to": ir.AttrInt64("to", dtype)}, outputs=[output], name=node_name)

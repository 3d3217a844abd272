"""fold-constants: evaluate nodes whose inputs are all constant (and Shape of statically shaped values)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from qdq_compiler.ir import eliminate_dead_code
from qdq_compiler.ir.editing import constant_array, is_constant, topological_sort
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass

# Ops never folded: quantization must stay explicit, random ops are not constant.
NEVER_FOLD = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)


@register_pass
class FoldConstants(Pass):
    """Replace constant subgraphs (the Shape/Gather/Concat arithmetic of PyTorch exports) by initializers."""

    name = "fold-constants"
    summary = "Evaluate constant subgraphs (incl. Shape of static shapes) into initializers."

    @dataclass(frozen=True)
    class Options:
        max_elements: int = 1 << 20

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        topological_sort(graph)
        opset = model.opset_imports.get("", 17)
        result = PassResult(modified=False)
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type in NEVER_FOLD or node.graph is not graph:
                continue
            if node.op_type != "Shape" and not _all_inputs_constant(node):
                continue  # what _evaluate would find, without reading an array or an attribute
            if any(
                a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()
            ):
                continue
            outputs = _static_shape_of(node) if node.op_type == "Shape" else _evaluate(node, opset)
            if outputs is None or any(o.size > self.options.max_elements for o in outputs):
                continue
            _replace_with_constants(graph, node, outputs)
            result.statistics["num-nodes-folded"] += 1
        if result.statistics:
            result.statistics["num-dead-removed"] += eliminate_dead_code(graph)
            result.modified = True
        return result


def _static_shape_of(node: ir.Node) -> list[np.ndarray] | None:
    """The output of Shape when its input's shape is fully known."""
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    dims = np.array(list(shape), dtype=np.int64)
    start = node.attributes.get("start")
    end = node.attributes.get("end")
    begin = start.as_int() if start is not None else 0
    stop = end.as_int() if end is not None else len(dims)
    return [dims[begin:stop]]


def _all_inputs_constant(node: ir.Node) -> bool:
    """Whether `node` has inputs and every one given is a constant (not a graph input)."""
    return bool(node.inputs) and all(value is None or is_constant(value) for value in node.inputs)


def _evaluate(node: ir.Node, opset: int) -> list[np.ndarray] | None:
    """Run one node on its constant inputs with onnx's reference evaluator; None if not constant."""
    if not node.inputs:
        return None
    arrays: list[np.ndarray | None] = []
    for value in node.inputs:
        if value is None:
            arrays.append(None)
            continue
        if value.is_graph_input():
            return None
        array = constant_array(value)
        if array is None:
            return None
        arrays.append(array)
    input_names = [f"in{i}" if a is not None else "" for i, a in enumerate(arrays)]
    output_names = [f"out{i}" for i in range(len(node.outputs))]
    attrs = [ir.to_proto(attr) for attr in node.attributes.values()]
    proto_node = onnx.helper.make_node(node.op_type, input_names, output_names)
    proto_node.attribute.extend(attrs)
    try:
        evaluator = ReferenceEvaluator(proto_node, opsets={"": opset})
        feeds = {n: a for n, a in zip(input_names, arrays) if a is not None}
        results = evaluator.run(None, feeds)
    except Exception:
        return None  # not foldable by the reference runtime: leave it
    return [np.asarray(r) for r in results]


def _replace_with_constants(graph: ir.Graph, node: ir.Node, arrays: list[np.ndarray]) -> None:
    """Swap each output of `node` for an initializer of the same name."""
    for output, array in zip(node.outputs, arrays):
        tensor = ir.tensor(np.asarray(array, order="C"))
        constant = ir.Value(name=None, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype))
        constant.const_value = tensor
        output.replace_all_uses_with(constant, replace_graph_outputs=True)
        name = output.name
        output.name = None
        constant.name = name
        tensor.name = name
        graph.register_initializer(constant)
    for index in range(len(node.inputs)):
        node.replace_input_with(index, None)
    graph.remove(node, safe=True)

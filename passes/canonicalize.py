"""canonicalize: remove Identity and inference Dropout, hoist Constant nodes, merge duplicate constants,
and delete dead code."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import onnx_ir as ir

from qdq_compiler.ir import bypass_node, eliminate_dead_code
from qdq_compiler.ir.editing import constant_array
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass


@register_pass
class Canonicalize(Pass):
    """Bring the graph to the canonical form the other passes expect."""

    name = "canonicalize"
    summary = "Remove Identity/inference Dropout, hoist Constants, merge duplicate constants, drop dead code."

    @dataclass(frozen=True)
    class Options:
        remove_identity: bool = True
        remove_dropout: bool = True
        hoist_constants: bool = True
        merge_duplicate_constants: bool = True
        remove_dead_code: bool = True
        name_nodes: bool = True

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        result = PassResult(modified=False)
        stats = result.statistics
        for node in list(graph):
            if self.options.remove_identity and _is_op(node, "Identity") and _bypass(node):
                stats["num-identity-removed"] += 1
            elif self.options.remove_dropout and _is_inference_dropout(node) and _bypass(node):
                stats["num-dropout-removed"] += 1
            elif self.options.hoist_constants and _is_op(node, "Constant") and _hoist_constant(graph, node):
                stats["num-constants-hoisted"] += 1
        if self.options.merge_duplicate_constants:
            stats["num-duplicate-constants-merged"] += merge_duplicate_initializers(graph)
        if self.options.remove_dead_code:
            stats["num-dead-removed"] += eliminate_dead_code(graph)
        if self.options.name_nodes:
            stats["num-nodes-named"] += name_unnamed_nodes(graph)
        result.modified = any(stats.values())
        return result


def _is_op(node: ir.Node, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in ("", "ai.onnx")


def _bypass(node: ir.Node) -> bool:
    """Remove a pass-through node if it can go; say whether it went."""
    graph = node.graph
    bypass_node(node)
    return node.graph is not graph


def _is_inference_dropout(node: ir.Node) -> bool:
    """A Dropout that is the identity at inference: training_mode absent or constant false, no mask used."""
    if not _is_op(node, "Dropout"):
        return False
    if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
        return False
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is None:
        return True
    flag = constant_array(training)
    return flag is not None and not bool(flag)


def _hoist_constant(graph: ir.Graph, node: ir.Node) -> bool:
    """Turn a Constant node holding a tensor into an initializer of the same name."""
    output = node.outputs[0]
    if output.is_graph_output() or not output.name or output.name in graph.initializers:
        return False
    attr = node.attributes.get("value")
    if attr is None or attr.type != ir.AttributeType.TENSOR:
        return False
    tensor = attr.as_tensor()
    replacement = ir.Value(name=None, shape=ir.Shape(tensor.shape.numpy()), type=ir.TensorType(tensor.dtype))
    replacement.const_value = tensor
    output.replace_all_uses_with(replacement)
    name = output.name
    graph.remove(node, safe=True)
    replacement.name = name
    tensor.name = name
    graph.register_initializer(replacement)
    return True


def merge_duplicate_initializers(graph: ir.Graph) -> int:
    """Point every use of an initializer at the first one with equal dtype, shape and bytes."""
    first_by_content: dict[tuple, ir.Value] = {}
    merged = 0
    for name in list(graph.initializers):
        value = graph.initializers[name]
        if value.is_graph_input() or value.is_graph_output() or value.const_value is None:
            continue
        tensor = value.const_value
        digest = hashlib.sha256(tensor.tobytes()).hexdigest()
        key = (tensor.dtype, tuple(tensor.shape), digest)
        kept = first_by_content.setdefault(key, value)
        if kept is value:
            continue
        value.replace_all_uses_with(kept)
        graph.initializers.pop(name)
        merged += 1
    return merged


def name_unnamed_nodes(graph: ir.Graph) -> int:
    """Give nodes without a name a stable one (`<op_type>_<n>`): reports and exclusions refer to names."""
    taken = {node.name for node in graph if node.name}
    named = 0
    for node in graph:
        if node.name:
            continue
        index = 0
        while f"{node.op_type}_{index}" in taken:
            index += 1
        node.name = f"{node.op_type}_{index}"
        taken.add(node.name)
        named += 1
    return named

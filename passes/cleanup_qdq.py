"""cleanup-qdq: merge duplicate Q/DQ on one tensor, cancel DQ->Q with equal scales, drop useless pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.editing import eliminate_dead_code
from qdq_compiler.ir.op_facts import is_activation_quantizer, weighted_op
from qdq_compiler.ir.qdq import axis_of, is_dequantize, is_quantize, scale_of, zero_point_of
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.targets.trt_rules import INT8_CAPABLE_OPS, commuting_rule


@register_pass
class CleanupQDQ(Pass):
    """Keep only Q/DQ that TensorRT can use, one pair per tensor."""

    name = "cleanup-qdq"
    summary = "Merge duplicate Q/DQ, cancel DQ->Q with equal scales, drop Q/DQ that feed no quantizable op."

    @dataclass(frozen=True)
    class Options:
        merge_duplicates: bool = True
        cancel_requantize: bool = True
        drop_unused: bool = True

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        result = PassResult(modified=False)
        stats = result.statistics
        if self.options.merge_duplicates:
            stats["num-duplicates-merged"] += _merge_duplicates(graph)
        if self.options.cancel_requantize:
            stats["num-requantize-cancelled"] += _cancel_equal_dq_q(graph)
        if self.options.drop_unused:
            stats["num-unused-pairs-dropped"] += _drop_pairs_feeding_no_quantizable_op(graph)
        if any(stats.values()):
            eliminate_dead_code(graph)
            result.modified = True
        return result


def _same_quantizer(a: ir.Node, b: ir.Node) -> bool:
    """Equal scale, zero-point and axis."""
    pairs = [(scale_of(a), scale_of(b)), (zero_point_of(a), zero_point_of(b))]
    for left, right in pairs:
        if (left is None) != (right is None):
            return False
        if (
            left is not None
            and right is not None
            and (left.shape != right.shape or not np.array_equal(left, right))
        ):
            return False
    return axis_of(a) == axis_of(b)


def _merge_duplicates(graph: ir.Graph) -> int:
    """Two Qs (or two DQs) reading one value with equal parameters become one."""
    merged = 0
    for node in list(graph):
        if node.graph is not graph or not (is_quantize(node) or is_dequantize(node)):
            continue
        source = input_of(node, 0)
        for user, index in list(source.uses()):
            if user is node or index != 0 or user.op_type != node.op_type or user.graph is not graph:
                continue
            if _same_quantizer(node, user) and not user.outputs[0].is_graph_output():
                user.outputs[0].replace_all_uses_with(node.outputs[0])
                merged += 1
    return merged


def _cancel_equal_dq_q(graph: ir.Graph) -> int:
    """Q(DQ(x)) with equal per-tensor parameters is x."""
    cancelled = 0
    for node in list(graph):
        if not is_quantize(node) or node.outputs[0].is_graph_output():
            continue
        producer = node.inputs[0].producer() if node.inputs[0] is not None else None
        if is_dequantize(producer) and axis_of(node) is None and _same_quantizer(producer, node):
            node.outputs[0].replace_all_uses_with(input_of(producer, 0))
            cancelled += 1
    return cancelled


def _feeds_quantizable(value: ir.Value, seen: set[int] | None = None) -> bool:
    """Whether some consumer of `value`, looking through commuting ops, runs INT8 with a DQ input."""
    seen = seen if seen is not None else set()
    for user, _ in value.uses():
        if id(user) in seen:
            continue
        seen.add(id(user))
        if weighted_op(user) is not None or user.op_type in INT8_CAPABLE_OPS or is_quantize(user):
            return True
        if commuting_rule(user) is not None and any(_feeds_quantizable(v, seen) for v in user.outputs):
            return True
    return False


def _drop_pairs_feeding_no_quantizable_op(graph: ir.Graph) -> int:
    """Bypass activation Q->DQ pairs whose DQ output reaches no op that could use INT8."""
    dropped = 0
    for node in list(graph):
        if not is_dequantize(node) or node.graph is not graph:
            continue
        quantize = node.inputs[0].producer() if node.inputs[0] is not None else None
        if not is_activation_quantizer(quantize):
            continue
        if node.outputs[0].is_graph_output() or _feeds_quantizable(node.outputs[0]):
            continue
        node.outputs[0].replace_all_uses_with(input_of(quantize, 0))
        dropped += 1
    return dropped

"""cleanup-qdq: merge duplicate Q/DQ on one tensor, cancel DQ->Q with equal scales, drop useless pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.op_facts import is_activation_quantizer, weighted_op
from qdq_compiler.ir.qdq import (
    DEQUANTIZE,
    QUANTIZE,
    axis_of,
    is_dequantize,
    is_quantize,
    scale_of,
    zero_point_of,
)
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.rewrite import RewritePattern, Rewriter, apply_patterns_greedily
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
        rewriter = Rewriter(graph)
        # One phase after the other, each to its fixpoint: merging first gives cancelling one pair to look at.
        phases: list[tuple[bool, str, list[RewritePattern]]] = [
            (
                self.options.merge_duplicates,
                "num-duplicates-merged",
                [MergeDuplicate(QUANTIZE), MergeDuplicate(DEQUANTIZE)],
            ),
            (self.options.cancel_requantize, "num-requantize-cancelled", [CancelRequantize()]),
            (self.options.drop_unused, "num-unused-pairs-dropped", [DropPairFeedingNoQuantizableOp()]),
        ]
        for enabled, counter, patterns in phases:
            if enabled:
                rewriter.count(counter, 0)
                apply_patterns_greedily(graph, patterns, rewriter=rewriter)
        result = PassResult(modified=False, statistics=rewriter.statistics)
        if any(rewriter.statistics.values()):
            rewriter.eliminate_dead_code()
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


def _is_live(value: ir.Value) -> bool:
    return bool(value.uses()) or value.is_graph_output()


class MergeDuplicate(RewritePattern):
    """Two Qs (or two DQs) reading one value with equal parameters become one: the one visited first
    hands its uses to a live twin, so the last of a group survives and dead twins go with dead code."""

    def __init__(self, op_type: str) -> None:
        self.anchor_op = op_type

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        output = node.outputs[0]
        if output.is_graph_output() or not output.uses():
            return rewriter.notify_match_failure(node, "output is a graph output or unused")
        for user, index in input_of(node, 0).uses():
            if user is node or index != 0 or user.op_type != node.op_type or user.graph is not node.graph:
                continue
            if _is_live(user.outputs[0]) and _same_quantizer(node, user):
                rewriter.replace_all_uses(output, user.outputs[0])
                rewriter.count("num-duplicates-merged")
                return True
        return rewriter.notify_match_failure(node, "no live twin with equal parameters")


class CancelRequantize(RewritePattern):
    """Q(DQ(x)) with equal per-tensor parameters is x."""

    anchor_op = QUANTIZE

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        if node.outputs[0].is_graph_output():
            return rewriter.notify_match_failure(node, "output is a graph output")
        producer = node.inputs[0].producer() if node.inputs[0] is not None else None
        if not is_dequantize(producer) or axis_of(node) is not None or not _same_quantizer(producer, node):
            return rewriter.notify_match_failure(node, "not a per-tensor DQ->Q with equal parameters")
        rewriter.replace_all_uses(node.outputs[0], input_of(producer, 0))
        rewriter.count("num-requantize-cancelled")
        return True


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


class DropPairFeedingNoQuantizableOp(RewritePattern):
    """Bypass an activation Q->DQ pair whose DQ output reaches no op that could use INT8."""

    anchor_op = DEQUANTIZE

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        quantize = node.inputs[0].producer() if node.inputs[0] is not None else None
        if not is_activation_quantizer(quantize):
            return rewriter.notify_match_failure(node, "not the DQ of an activation Q->DQ pair")
        if node.outputs[0].is_graph_output() or _feeds_quantizable(node.outputs[0]):
            return rewriter.notify_match_failure(node, "feeds a graph output or a quantizable op")
        rewriter.replace_all_uses(node.outputs[0], input_of(quantize, 0))
        rewriter.count("num-unused-pairs-dropped")
        return True

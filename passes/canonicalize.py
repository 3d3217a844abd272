"""canonicalize: remove Identity and inference Dropout, hoist Constant nodes, merge duplicate constants,
and delete dead code."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import onnx_ir as ir

from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.op_facts import is_onnx_op
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass, shape_facts
from qdq_compiler.rewrite import RewritePattern, Rewriter, apply_patterns_greedily


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
        patterns: list[RewritePattern] = []
        if self.options.remove_identity:
            patterns.append(RemoveIdentity())
        if self.options.remove_dropout:
            patterns.append(RemoveInferenceDropout())
        if self.options.hoist_constants:
            patterns.append(HoistConstant())
        rewriter = Rewriter(graph)
        if patterns:
            apply_patterns_greedily(graph, patterns, rewriter=rewriter)
        # Merging equal constants, removing dead nodes and naming nodes change no value's type, shape or
        # contents: inferred shapes stay inferred unless a pattern (Identity, Dropout, Constant) rewrote.
        keeps_shapes = not rewriter.modified
        stats = rewriter.statistics
        if self.options.merge_duplicate_constants:
            stats["num-duplicate-constants-merged"] += merge_duplicate_initializers(rewriter)
        if self.options.remove_dead_code:
            stats["num-dead-removed"] += rewriter.eliminate_dead_code()
        if self.options.name_nodes:
            stats["num-nodes-named"] += name_unnamed_nodes(rewriter)
        preserved = shape_facts(ctx.facts) if keeps_shapes else frozenset()
        return PassResult(modified=any(stats.values()), statistics=stats, preserved=preserved)


def _bypass(node: ir.Node, rewriter: Rewriter) -> bool:
    """Remove a pass-through node (its first output equals its first input) if it can go."""
    source = node.inputs[0]
    if source is None:
        return rewriter.notify_match_failure(node, "no input")
    output = node.outputs[0]
    if output.is_graph_output() and (source.is_graph_input() or source.is_graph_output()):
        # Two graph boundary values cannot be merged; an explicit Identity has to stay.
        if node.op_type == "Identity":
            return rewriter.notify_match_failure(node, "joins a graph input or output to a graph output")
        rewriter.replace_op(node, "Identity", [source], num_outputs=1)
        return True
    if output.is_graph_output() and source.is_initializer():
        return rewriter.notify_match_failure(node, "copies an initializer to a graph output")
    if output.is_graph_output():
        # The graph output name is the model's interface: give it to the surviving value.
        rewriter.replace_value(output, source)
    else:
        rewriter.replace_all_uses(output, source)
    rewriter.erase(node)
    return True


class RemoveIdentity(RewritePattern):
    """Identity(x) -> x."""

    anchor_op = "Identity"

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        if not _bypass(node, rewriter):
            return False
        rewriter.count("num-identity-removed")
        return True


class RemoveInferenceDropout(RewritePattern):
    """Dropout(x) -> x when it is the identity at inference."""

    anchor_op = "Dropout"

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        if not _is_inference_dropout(node):
            return rewriter.notify_match_failure(node, "mask used or training mode on")
        if not _bypass(node, rewriter):
            return False
        rewriter.count("num-dropout-removed")
        return True


def _is_inference_dropout(node: ir.Node) -> bool:
    """A Dropout that is the identity at inference: training_mode absent or constant false, no mask used."""
    if not is_onnx_op(node, "Dropout"):
        return False
    if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
        return False
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is None:
        return True
    flag = constant_array(training)
    return flag is not None and not bool(flag)


class HoistConstant(RewritePattern):
    """A Constant node holding a tensor becomes an initializer of the same name."""

    anchor_op = "Constant"

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        output = node.outputs[0]
        if output.is_graph_output() or not output.name or output.name in rewriter.graph.initializers:
            return rewriter.notify_match_failure(node, "graph output, unnamed, or its name is an initializer")
        attr = node.attributes.get("value")
        if attr is None or attr.type != ir.AttributeType.TENSOR:
            return rewriter.notify_match_failure(node, "holds no tensor value")
        tensor = attr.as_tensor()
        replacement = ir.Value(
            name=None, shape=ir.Shape(tensor.shape.numpy()), type=ir.TensorType(tensor.dtype)
        )
        replacement.const_value = tensor
        rewriter.replace_all_uses(output, replacement)
        name = output.name
        rewriter.erase(node)
        replacement.name = name
        tensor.name = name
        rewriter.add_initializer(replacement)
        rewriter.count("num-constants-hoisted")
        return True


def merge_duplicate_initializers(rewriter: Rewriter) -> int:
    """Point every use of an initializer at the first one with equal dtype, shape and bytes.

    Initializers are told apart by a digest of their bytes first; dtype and shape (slow to read from a
    loaded tensor) are read only for initializers whose bytes another one has too."""
    graph = rewriter.graph
    first_by_digest: dict[bytes, list[_Kept]] = {}
    merged = 0
    for name in list(graph.initializers):
        value = graph.initializers[name]
        if value.is_graph_input() or value.is_graph_output() or value.const_value is None:
            continue
        tensor = value.const_value
        candidates = first_by_digest.setdefault(hashlib.sha256(tensor.tobytes()).digest(), [])
        if not candidates:
            candidates.append(_Kept(value))
            continue
        key = _type_key(tensor)
        kept = next((candidate.value for candidate in candidates if candidate.key() == key), None)
        if kept is None:
            candidates.append(_Kept(value, key))
            continue
        rewriter.replace_all_uses(value, kept)
        rewriter.remove_initializer(value)
        merged += 1
    return merged


class _Kept:
    """An initializer others with its bytes merge into, its (dtype, shape) read when first compared."""

    def __init__(self, value: ir.Value, key: tuple | None = None) -> None:
        self.value = value
        self._key = key

    def key(self) -> tuple:
        """(dtype, shape) of the initializer."""
        if self._key is None:
            assert self.value.const_value is not None
            self._key = _type_key(self.value.const_value)
        return self._key


def _type_key(tensor: ir.TensorProtocol) -> tuple:
    """What besides the bytes two initializers must share to be merged: dtype and shape."""
    return (tensor.dtype, tuple(tensor.shape))


def name_unnamed_nodes(rewriter: Rewriter) -> int:
    """Give nodes without a name a stable one (`<op_type>_<n>`): reports and exclusions refer to names."""
    named = 0
    for node in rewriter.graph:
        if not node.name:
            rewriter.set_name(node, rewriter.names.numbered_node(node.op_type))
            named += 1
    return named

"""TensorRT's Q/DQ propagation, simulated on a copy of the IR with rewrite patterns under the shared driver.

:func:`propagate` copies the model's main graph (:func:`working_copy`: new nodes and values, tensors
shared, nothing of the input model touched) and runs two patterns with
:func:`qdq_compiler.rewrite.driver.apply_patterns_greedily`, in phases: every DQ forward first
(:class:`MoveDqForward`), then every Q backward (:class:`MoveQBackward`), again until neither moves. The
rules (which ops commute, Concat's shared-scale condition) are those of `targets/trt_rules.py`.

What the patterns need beyond the graph lives in :class:`QdqFacts`, annotations of the copy's nodes (no
second graph): the kind of each Q/DQ (activation or constant), its scale, and for a moved copy the original
Q/DQ it stands for, whose name the report shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from qdq_compiler.collector import collector_paused
from qdq_compiler.ir.editing import NameScope
from qdq_compiler.ir.op_facts import is_weight_qdq, node_label
from qdq_compiler.ir.qdq import is_dequantize, is_quantize
from qdq_compiler.rewrite.driver import apply_patterns_greedily
from qdq_compiler.rewrite.rewriter import RewritePattern, Rewriter
from qdq_compiler.targets import trt_rules as rules
from qdq_compiler.targets.constant_arrays import ConstantArrays

_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
MAX_ROUNDS = 16  # DQ phase + Q phase rounds; a topologically sorted graph settles in one (a second checks)


@dataclass
class WorkingCopy:
    """The copy to rewrite: its graph, each copied node's original, the copy's constant values, and the
    values a weight's DQ writes where that DQ is left out (see :func:`working_copy`)."""

    graph: ir.Graph
    originals: dict[ir.Node, ir.Node]
    constants: set[ir.Value]  # initializers and Constant outputs, as the copy's nodes read them
    dequantized_weights: set[ir.Value]


def working_copy(graph: ir.Graph) -> WorkingCopy:
    """A copy of `graph`'s structure (top level) to rewrite, and each copied node's original.

    New nodes and values, in the same order with the same names and op types; only what the simulation
    reads on the copy is copied, so it costs one pass over the graph and few objects: attributes, shapes and
    types stay on the originals (:class:`QdqFacts` and the rules read them there); a Q/DQ keeps only its
    data input, and a Conv/ConvTranspose/Gemm/MatMul only its activation and weight inputs, when the others
    are constants (a scale's value is in :class:`QdqFacts`); a DQ of a constant read only as the weight of
    such layers, which nothing moves, is left out and its output recorded in `dequantized_weights`; an
    initializer is a value with the original's tensor only where a copied node reads it, never registered
    in the copy.
    """
    originals: list[ir.Node] = []
    values: dict[int, ir.Value] = {id(v): ir.Value(name=v.name) for v in graph.inputs}
    constants: set[ir.Value] = set()
    dequantized: set[ir.Value] = set()
    for node in graph:  # outputs first, so a graph listed out of order copies too
        for v in node.outputs:
            values[id(v)] = ir.Value(name=v.name)
        if _weight_dq(node):
            dequantized.add(values[id(node.outputs[0])])
            continue
        originals.append(node)
        if node.op_type == "Constant" and node.outputs:
            constants.add(values[id(node.outputs[0])])

    def twin(value: ir.Value | None) -> ir.Value | None:
        if value is None:
            return None
        copied = values.get(id(value))
        if copied is None:  # an initializer, or read but defined nowhere in this graph
            if value.is_initializer():
                copied = ir.Value(name=value.name, const_value=value.const_value)
                constants.add(copied)
            else:
                copied = ir.Value(name=value.name)
            values[id(value)] = copied
        return copied

    for v in graph.inputs:  # a graph input that is also an initializer: one constant value, as in the model
        if v.is_initializer():
            del values[id(v)]
            twin(v)
    nodes = [
        ir.Node(
            node.domain,
            node.op_type,
            [twin(v) for v in _copied_inputs(node)],
            overload=node.overload,
            outputs=[values[id(v)] for v in node.outputs],
            version=node.version,
            name=node.name,
        )
        for node in originals
    ]
    inputs = [values[id(v)] for v in graph.inputs]
    outputs = [values.get(id(v)) or ir.Value(name=v.name) for v in graph.outputs]
    copy = ir.Graph(inputs, outputs, nodes=nodes, opset_imports=dict(graph.opset_imports))
    return WorkingCopy(copy, dict(zip(nodes, originals, strict=True)), constants, dequantized)


def _weight_dq(node: ir.Node) -> bool:
    """A DQ of a constant read only as the weight input of Conv/ConvTranspose/Gemm/MatMul layers."""
    if node.op_type != "DequantizeLinear" or node.domain != "" or not node.outputs:
        return False
    output = node.outputs[0]
    uses = output.uses()
    if not uses or output.is_graph_output() or not is_weight_qdq(node):
        return False
    for user, index in uses:
        rule = rules.weighted_rule(user)
        if rule is None or index != rule.weight_input:
            return False
    return True


def _copied_inputs(node: ir.Node) -> Sequence[ir.Value | None]:
    """The inputs a node's copy reads: up to the data input of a Q/DQ, up to the weight of a weighted
    layer, when the inputs after those are not computed (constants, graph inputs or absent)."""
    inputs = node.inputs
    if node.domain != "":
        return inputs
    if node.op_type in _QDQ_OPS:
        keep = 1
    else:
        rule = rules.weighted_rule(node)
        if rule is None:
            return inputs
        keep = max(rule.activation_input, rule.weight_input) + 1
    if len(inputs) > keep and all(v is None or v.producer() is None for v in inputs[keep:]):
        return inputs[:keep]
    return inputs


@dataclass
class QdqFacts:
    """What the simulation knows about the copy's nodes beyond the graph itself.

    `kinds` holds 'act-q', 'act-dq', 'const-q' or 'const-dq' for every Q/DQ (other nodes are ops);
    `scales` their scales (float64, flat; None when not constant); `names` the name each Q/DQ is shown
    under (its original's; for a moved copy, that of the input model's Q/DQ it stands for); `originals`
    each copied node's original; `commuting` the rule of each op Q/DQ can move across, decided once on
    the input model's nodes; `moves` describes each move in the order made.
    """

    kinds: dict[ir.Node, str] = field(default_factory=dict)
    scales: dict[ir.Node, np.ndarray | None] = field(default_factory=dict)
    names: dict[ir.Node, str] = field(default_factory=dict)
    originals: dict[ir.Node, ir.Node] = field(default_factory=dict)
    commuting: dict[ir.Node, rules.CommutingOpRule] = field(default_factory=dict)
    moves: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, originals: dict[ir.Node, ir.Node], constants: ConstantArrays | None = None) -> QdqFacts:
        """Annotate each copied node from its original (scales read through `constants`)."""
        constants = constants if constants is not None else ConstantArrays()
        facts = cls(originals=originals)
        flat_scales: dict[int, np.ndarray | None] = {}  # by scale value: Q and DQ pairs share theirs
        for node, original in originals.items():
            op_type = original.op_type
            if op_type in _QDQ_OPS and (is_quantize(original) or is_dequantize(original)):
                quantize = is_quantize(original)
                kind = ("const-" if is_weight_qdq(original) else "act-") + ("q" if quantize else "dq")
                key = id(original.inputs[1])
                if key not in flat_scales:
                    scale = constants.array(original.inputs[1])
                    flat_scales[key] = None if scale is None else np.asarray(scale, np.float64).reshape(-1)
                facts.annotate(node, kind, flat_scales[key], node_label(original))
            elif op_type in rules.COMMUTING_OPS:
                rule = rules.commuting_rule(original)
                if rule is not None:
                    facts.commuting[node] = rule
        return facts

    def annotate(self, node: ir.Node, kind: str, scale: np.ndarray | None, name: str) -> None:
        """Record a Q/DQ node (an original, or a copy a move inserted) and the name it is shown under."""
        self.kinds[node] = kind
        self.scales[node] = scale
        self.names[node] = name

    def kind(self, node: ir.Node | None) -> str:
        """'op' for anything but a Q/DQ."""
        return "op" if node is None else self.kinds.get(node, "op")

    def is_q(self, node: ir.Node | None) -> bool:
        return self.kind(node) in ("act-q", "const-q")

    def is_dq(self, node: ir.Node | None) -> bool:
        return self.kind(node) in ("act-dq", "const-dq")

    def per_tensor(self, node: ir.Node) -> bool:
        scale = self.scales.get(node)
        return scale is not None and scale.size == 1

    def name(self, node: ir.Node) -> str:
        """The name `node` is shown under: its original's, or that of the Q/DQ a moved copy stands for."""
        return self.names.get(node) or node_label(self.originals.get(node, node))

    def label(self, node: ir.Node) -> str:
        """`Op 'name'` (see :meth:`name`)."""
        return f"{node.op_type} '{self.name(node)}'"

    def data_inputs(self, node: ir.Node) -> list[int] | None:
        """The data input indices of an op Q/DQ move across, None for any other node."""
        rule = self.commuting.get(node)
        return None if rule is None else rule.data_input_indices(node)


def same_scale(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Scales match exactly in float32 and are per-tensor (TensorRT compares the values it was given)."""
    if a is None or b is None or a.size != 1 or b.size != 1:
        return False
    return bool(np.float32(a[0]) == np.float32(b[0]))


def _copy_of(template: ir.Node, data: ir.Value | None, origin: str, rewriter: Rewriter) -> ir.Node:
    """A Q/DQ reading `data` with `template`'s scale, zero point and attributes, named `<origin>_moved`
    (made unique by the Rewriter's scope)."""
    return ir.Node(
        template.domain,
        template.op_type,
        [data, *template.inputs[1:]],
        template.attributes.values(),
        num_outputs=1,
        name=rewriter.names.node(f"{origin}_moved"),
    )


class MoveDqForward(RewritePattern):
    """DQ(x) -> op  =>  op -> DQ, for an op Q/DQ commute with whose data inputs all come from per-tensor
    activation DQs (for Concat, of one scale). A DQ left without users goes."""

    def __init__(self, facts: QdqFacts):
        self.facts = facts

    def matches_anchor(self, node: ir.Node) -> bool:
        return node in self.facts.commuting

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        facts = self.facts
        indices = facts.data_inputs(node) or []
        producers = [node.inputs[i].producer() for i in indices]  # type: ignore[union-attr]
        dqs = [p for p in producers if p is not None and facts.kind(p) == "act-dq" and facts.per_tensor(p)]
        if not dqs or len(dqs) != len(producers):
            return rewriter.notify_match_failure(node, "a data input does not come from a per-tensor DQ")
        first = dqs[0]
        if len(dqs) > 1 and not all(same_scale(facts.scales[first], facts.scales[dq]) for dq in dqs):
            return rewriter.notify_match_failure(node, "its input DQs differ in scale")
        for index, dq in zip(indices, dqs, strict=True):
            rewriter.set_input(node, index, dq.inputs[0])
        copies = [_copy_of(first, None, facts.names[first], rewriter) for _ in node.outputs]
        rewriter.insert_after(node, copies)
        for output, copy in zip(node.outputs, copies, strict=True):
            base = output.name
            rewriter.replace_value(output, copy.outputs[0])  # users and graph outputs, and the name
            output.name = rewriter.names.value(base or "quantized")
            rewriter.set_input(copy, 0, output)
            facts.annotate(copy, "act-dq", facts.scales[first], facts.names[first])
        facts.moves.append(f"DQ {facts.names[first]!r} moved after {facts.label(node)}")
        rewriter.count("num-dq-moved")
        for dq in {id(d): d for d in dqs}.values():
            if not any(out.uses() or out.is_graph_output() for out in dq.outputs):
                rewriter.erase(dq)
        return True


class MoveQBackward(RewritePattern):
    """op -> Q  =>  Q -> op (a copy per data input), for a per-tensor activation Q that alone reads the
    single output of an op Q/DQ commute with, whose data inputs are not already quantized. The copies then
    move on at once, depth first (the simulation's fixed move order, see :func:`propagate`)."""

    anchor_op = "QuantizeLinear"

    def __init__(self, facts: QdqFacts):
        self.facts = facts

    def matches_anchor(self, node: ir.Node) -> bool:
        return self.facts.kind(node) == "act-q"

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        copies = self._move(node, rewriter)
        if copies is None:
            return False
        stack = list(reversed(copies))
        while stack:
            moved = self._move(stack.pop(), rewriter)
            if moved is not None:
                stack.extend(reversed(moved))
        return True

    def _move(self, q: ir.Node, rewriter: Rewriter) -> list[ir.Node] | None:
        """Move `q` before the op feeding it: the copies it leaves, or None when it cannot move."""
        facts = self.facts
        if facts.kind(q) != "act-q" or not facts.per_tensor(q) or q.inputs[0] is None:
            return None
        out = q.inputs[0]
        op = out.producer()
        indices = facts.data_inputs(op) if op is not None else None
        if op is None or indices is None or len(op.outputs) != 1:
            return None
        if out.is_graph_output() or len(out.uses()) != 1:
            rewriter.notify_match_failure(q, "its input has other users")
            return None
        if any(facts.is_q(op.inputs[i].producer()) for i in indices):  # type: ignore[union-attr]
            return None  # already quantized input: nothing to gain
        copies = []
        for index in indices:
            copy = _copy_of(q, op.inputs[index], facts.names[q], rewriter)
            copy.outputs[0].name = rewriter.names.value(op.inputs[index].name or "quantized")  # type: ignore[union-attr]
            rewriter.insert_before(op, copy)
            rewriter.set_input(op, index, copy.outputs[0])
            facts.annotate(copy, "act-q", facts.scales[q], facts.names[q])
            copies.append(copy)
        rewriter.replace_value(q.outputs[0], out)  # the op now writes what the Q wrote
        rewriter.erase(q)
        facts.moves.append(f"Q {facts.names[q]!r} moved before {facts.label(op)}")
        rewriter.count("num-q-moved")
        return copies


def slice_splits(graph: ir.Graph, facts: QdqFacts, rewriter: Rewriter) -> None:
    """Replace each multi-output Split Q/DQ commute with by one single-output Slice per output, as TensorRT's
    ONNX parser imports it (one ISliceLayer per output, trt_rules.SRC_ONNX_TRT_IMPORT): a Q reading one
    output then moves back across its own slice whatever the other outputs feed. The stand-ins read only
    the data input (the simulation never evaluates them) and keep the Split's name, so reports name it."""
    slice_rule = rules.COMMUTING_OPS["Slice"]
    for split in [n for n in graph if n.op_type == "Split" and n in facts.commuting and len(n.outputs) > 1]:
        for output in split.outputs:
            stand_in = ir.Node("", "Slice", [split.inputs[0]], num_outputs=1, name=split.name)
            rewriter.insert_before(split, stand_in)
            rewriter.replace_value(output, stand_in.outputs[0])
            facts.commuting[stand_in] = slice_rule
            facts.originals[stand_in] = facts.originals[split]
        rewriter.erase(split)


@dataclass
class Propagated:
    """The rewritten copy, its annotations, and the Rewriter that made the moves (names, statistics)."""

    graph: ir.Graph
    facts: QdqFacts
    rewriter: Rewriter
    constants: set[ir.Value]  # the copy's constant values (initializers, Constant outputs)
    dequantized_weights: set[ir.Value]  # what a weight's DQ left out of the copy writes


def propagate(graph: ir.Graph, constants: ConstantArrays | None = None) -> Propagated:
    """Copy `graph` and move its activation DQs forward and Qs backward until nothing moves.

    The moves are those of the rule "always make the first possible move in node order, DQ moves before
    Q moves": the driver visits nodes in graph order, a DQ move only enables ops further down, and a Q
    move's copies move on depth first, so the DQ phase and then the Q phase make them in that order (a
    second round only moves anything in a graph listed out of order).
    """
    with collector_paused():
        working = working_copy(graph)
        copy = working.graph
        facts = QdqFacts.of(working.originals, constants)
        rewriter = Rewriter(copy, NameScope(graph))  # the graph's names, scanned at a first move
        slice_splits(copy, facts, rewriter)
        phases = [MoveDqForward(facts)], [MoveQBackward(facts)]
        for _ in range(MAX_ROUNDS):
            moved = False
            for patterns in phases:
                rewriter.modified = False
                apply_patterns_greedily(copy, patterns, rewriter=rewriter)
                moved |= rewriter.modified
            if not moved:
                break
    return Propagated(copy, facts, rewriter, working.constants, working.dequantized_weights)

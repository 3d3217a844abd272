"""Predict how TensorRT will fuse a Q/DQ model: which weighted layers run INT8, where requantizations and
reformat layers stay. An offline simulation of TensorRT's documented Q/DQ processing, not a build.

The simulation (rules from targets/trt_rules.py):
1. copy the graph into a small mutable form; Q/DQ of constants (weights, biases) are set apart;
2. move activation DQs forward and Qs backward across commuting ops until nothing moves (Concat only
   moves DQs when all its inputs share one scale; Q moves need the op's output to feed that Q alone);
3. a DQ directly followed by a Q is a pair: equal per-tensor scales cancel, otherwise a requantization;
4. a weighted op computes in INT8 when its activation and weight inputs both come from DQs; its output
   is INT8 when, after its fusible epilogue (activations, BN, SiLU, a residual Add fed by a DQ), every
   consumer is a Q;
5. a DQ with a consumer that does not absorb it, and a Q no INT8 producer absorbs, become reformat layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.op_facts import is_weight_qdq, node_label
from qdq_compiler.ir.qdq import is_dequantize, is_quantize, scale_of
from qdq_compiler.targets import trt_rules as rules
from qdq_compiler.targets.macs import layer_macs, model_shapes

PREDICTION_NOTE = (
    "Prediction from an offline simulation of TensorRT's Q/DQ processing (no TensorRT build); "
    "confirm on the device with the engine's layer report: `qdqc report-engine LAYERS.json --model MODEL`."
)


@dataclass
class LayerPrediction:
    """One weighted layer (Conv/ConvTranspose/Gemm/MatMul) and its predicted precision."""

    name: str
    op: str
    macs: int | None
    precision: str  # 'int8' | 'float': the compute precision
    output: str  # 'int8' | 'float': the precision of what the fused layer writes
    reason: str = ""
    fused: list[str] = field(default_factory=list)


@dataclass
class Requantization:
    """A DQ(s1) -> Q(s2) pair left after propagation with s1 != s2: a requantize layer in the engine."""

    dq: str
    q: str
    dq_scale: float | None  # None when per-channel or not constant
    q_scale: float | None
    at: str  # where the pair meets, e.g. "after MaxPool 'pool' -> Concat 'cat'"


@dataclass
class Reformat:
    """A Q or DQ TensorRT cannot fuse: it stays as its own (reformat/scale) layer."""

    node: str
    kind: str  # 'Q' | 'DQ'
    reason: str


@dataclass
class FusionReport:
    """Everything predict_fusions found; render with format_report, serialize with report_to_json."""

    layers: list[LayerPrediction]
    requantizations: list[Requantization]
    reformats: list[Reformat]
    int8_ops: list[str]
    split_fusions: list[str]
    cancelled_pairs: int
    moves: list[str]
    total_macs: int
    int8_macs: int
    note: str = PREDICTION_NOTE

    @property
    def int8_mac_share(self) -> float:
        """Fraction of Conv/ConvTranspose/Gemm/MatMul MACs predicted to run in INT8 (0 when unknown)."""
        return self.int8_macs / self.total_macs if self.total_macs else 0.0


# ----------------------------------------------------------------------------------------------------
# The small mutable graph the simulation rewrites
# ----------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    ir_node: ir.Node | None
    kind: str = "op"  # 'op' | 'act-q' | 'act-dq' | 'const-q' | 'const-dq'
    scale: np.ndarray | None = None
    origin: str = ""  # the original Q/DQ a moved copy stands for

    @property
    def is_q(self) -> bool:
        return self.kind in ("act-q", "const-q")

    @property
    def is_dq(self) -> bool:
        return self.kind in ("act-dq", "const-dq")

    @property
    def per_tensor(self) -> bool:
        return self.scale is not None and self.scale.size == 1

    def label(self) -> str:
        return f"{self.op} '{self.origin or self.name}'"


class _Graph:
    """Nodes in order, with producer and consumer indexes, updated in place by each Q/DQ move.

    During propagation (:func:`_propagate`) moved Q/DQ copies are kept beside the original node they were
    inserted next to and removed nodes are only marked, so a move costs the size of the nodes it touches;
    :meth:`settle` then writes the final node order and ordered consumer lists once.
    """

    def __init__(self, model: ir.Model):
        self._names: dict[int, str] = {}
        self.nodes: list[_Node] = []
        self.constants: set[str] = set()
        graph = model.graph
        for name, value in graph.initializers.items():
            self.constants.add(self._name(value) or name)
        for node in graph:
            if node.op_type == "Constant":
                self.constants.add(self._name(node.outputs[0]))
            self.nodes.append(self._convert(node))
        self.graph_outputs = {self._name(v) for v in graph.outputs}
        self._fresh = 0
        # Where propagation puts copies: just before / just after an original node (by id), in order.
        self._before: dict[int, list[_Node]] = {}
        self._after: dict[int, list[_Node]] = {}
        self._removed: set[int] = set()
        self.reindex()

    def _name(self, value: ir.Value | None) -> str:
        if value is None:
            return ""
        if value.name:
            return value.name
        return self._names.setdefault(id(value), f"<unnamed {len(self._names)}>")

    def _convert(self, node: ir.Node) -> _Node:
        sim = _Node(
            node_label(node),
            node.op_type,
            [self._name(v) for v in node.inputs],
            [self._name(v) for v in node.outputs],
            node,
        )
        if is_quantize(node) or is_dequantize(node):
            const = is_weight_qdq(node)
            sim.kind = ("const-" if const else "act-") + ("q" if is_quantize(node) else "dq")
            scale = scale_of(node)
            sim.scale = None if scale is None else np.asarray(scale, dtype=np.float64).reshape(-1)
            sim.origin = sim.name
        return sim

    def reindex(self) -> None:
        """Rebuild both indexes from `nodes` (consumers in node order, then input order)."""
        self.producer: dict[str, _Node] = {}
        self.users: dict[str, dict[tuple[int, int], tuple[_Node, int]]] = {}
        for node in self.nodes:
            for out in node.outputs:
                if out:
                    self.producer[out] = node
            for index, name in enumerate(node.inputs):
                if name:
                    self.users.setdefault(name, {})[(id(node), index)] = (node, index)

    # ------------------------------------------------------------------ edits (propagation)
    def set_input(self, node: _Node, index: int, value: str) -> None:
        """Point input `index` of `node` at `value`, keeping the consumer index current."""
        old = node.inputs[index]
        if old:
            self.users.get(old, {}).pop((id(node), index), None)
        node.inputs[index] = value
        if value:
            self.users.setdefault(value, {})[(id(node), index)] = (node, index)

    def set_output(self, node: _Node, index: int, value: str) -> None:
        """Make `node` produce `value` as output `index` (the old name loses its producer)."""
        old = node.outputs[index]
        if old and self.producer.get(old) is node:
            del self.producer[old]
        node.outputs[index] = value
        if value:
            self.producer[value] = node

    def add_copy(self, copy: _Node, anchor: _Node, after: bool) -> None:
        """Index a new Q/DQ copy; place it just before `anchor` (after earlier copies) or first after it."""
        for out in copy.outputs:
            if out:
                self.producer[out] = copy
        for index, name in enumerate(copy.inputs):
            if name:
                self.users.setdefault(name, {})[(id(copy), index)] = (copy, index)
        if after:
            self._after.setdefault(id(anchor), []).insert(0, copy)
        else:
            self._before.setdefault(id(anchor), []).append(copy)

    def remove(self, node: _Node) -> None:
        """Take `node` out of the graph and of both indexes."""
        for index, name in enumerate(node.inputs):
            if name:
                self.users.get(name, {}).pop((id(node), index), None)
        for out in node.outputs:
            if out and self.producer.get(out) is node:
                del self.producer[out]
        self._removed.add(id(node))

    def around(self, node: _Node) -> tuple[list[_Node], list[_Node]]:
        """The copies placed just before and just after an original node (live lists)."""
        return self._before.get(id(node), []), self._after.get(id(node), [])

    def is_removed(self, node: _Node) -> bool:
        return id(node) in self._removed

    def settle(self) -> None:
        """Write the final node order (copies in place, removed nodes dropped) and reindex once."""
        ordered: list[_Node] = []
        for node in self.nodes:
            before, after = self.around(node)
            ordered += [n for n in (*before, node, *after) if id(n) not in self._removed]
        self.nodes = ordered
        self._before, self._after, self._removed = {}, {}, set()
        self.reindex()

    # ------------------------------------------------------------------ queries
    def fresh(self, base: str) -> str:
        self._fresh += 1
        return f"{base}__sim{self._fresh}"

    def consumers(self, value: str) -> list[tuple[_Node, int]]:
        return list(self.users.get(value, {}).values())

    def producer_of(self, value: str) -> _Node | None:
        return self.producer.get(value)

    def is_used(self, value: str) -> bool:
        return bool(self.users.get(value)) or value in self.graph_outputs


# ----------------------------------------------------------------------------------------------------
# Step 2: propagation
# ----------------------------------------------------------------------------------------------------


def _commuting(node: _Node) -> rules.CommutingOpRule | None:
    if node.kind != "op" or node.ir_node is None:
        return None
    return rules.commuting_rule(node.ir_node)


def _data_inputs(node: _Node, rule: rules.CommutingOpRule) -> list[int]:
    assert node.ir_node is not None
    return [i for i in rule.data_input_indices(node.ir_node) if i < len(node.inputs) and node.inputs[i]]


def _same_scale(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Scales match exactly in float32 and are per-tensor (TensorRT compares the values it was given)."""
    if a is None or b is None or a.size != 1 or b.size != 1:
        return False
    return bool(np.float32(a[0]) == np.float32(b[0]))


def _move_dq_forward(g: _Graph, node: _Node, moves: list[str]) -> bool:
    """Move the DQ(s) in front of commuting op `node` behind it. Returns whether anything moved."""
    rule = _commuting(node)
    if rule is None:
        return False
    indices = _data_inputs(node, rule)
    producers = [g.producer_of(node.inputs[i]) for i in indices]
    dqs = [dq for dq in producers if dq is not None and dq.kind == "act-dq" and dq.per_tensor]
    if not dqs or len(dqs) != len(producers):
        return False
    first = dqs[0]
    if len(dqs) > 1 and not all(_same_scale(first.scale, dq.scale) for dq in dqs):
        return False  # Concat with unequal input scales: stays in float unless a Q moves back across it
    for i, dq in zip(indices, dqs, strict=True):
        g.set_input(node, i, dq.inputs[0])
    copies = []
    for j, out in enumerate(node.outputs):
        if not out:
            continue
        quantized = g.fresh(out)
        g.set_output(node, j, quantized)
        copies.append(
            _Node(
                g.fresh(first.name),
                "DequantizeLinear",
                [quantized] + first.inputs[1:],
                [out],
                None,
                "act-dq",
                first.scale,
                first.origin,
            )
        )
    for copy in reversed(copies):  # each goes first after `node`: reversed keeps them in output order
        g.add_copy(copy, node, after=True)
    moves.append(f"DQ {first.origin!r} moved after {node.label()}")
    for dq in {id(d): d for d in dqs}.values():
        if not any(g.is_used(out) for out in dq.outputs):
            g.remove(dq)
    return True


def _move_q_backward(g: _Graph, q: _Node, moves: list[str]) -> list[_Node] | None:
    """Move Q `q` in front of the commuting op feeding it (a copy per data input): the copies, or None."""
    if q.kind != "act-q" or not q.per_tensor:
        return None
    op = g.producer_of(q.inputs[0])
    rule = _commuting(op) if op is not None else None
    if op is None or rule is None or len([o for o in op.outputs if o]) != 1:
        return None
    out = q.inputs[0]
    if out in g.graph_outputs or len(g.consumers(out)) != 1:
        return None
    indices = _data_inputs(op, rule)
    feeding = [g.producer_of(op.inputs[i]) for i in indices]
    if any(p is not None and p.is_q for p in feeding):
        return None  # already quantized input: nothing to gain
    copies = []
    for i in indices:
        quantized = g.fresh(op.inputs[i])
        copy = _Node(
            g.fresh(q.name),
            "QuantizeLinear",
            [op.inputs[i]] + q.inputs[1:],
            [quantized],
            None,
            "act-q",
            q.scale,
            q.origin,
        )
        g.add_copy(copy, op, after=False)
        g.set_input(op, i, quantized)
        copies.append(copy)
    g.remove(q)
    g.set_output(op, 0, q.outputs[0])
    moves.append(f"Q {q.origin!r} moved before {op.label()}")
    return copies


class _Budget:
    """At most `left` moves in all (a guard against a rule set that never settles)."""

    def __init__(self, left: int):
        self.left = left

    def take(self) -> bool:
        self.left -= 1
        return self.left >= 0


def _dq_sweep(g: _Graph, moves: list[str], budget: _Budget) -> bool:
    """Move DQs forward across every op in node order (a move only enables ops further down)."""
    moved = False
    for node in g.nodes:
        if node.kind == "op" and budget.left > 0 and _move_dq_forward(g, node, moves):
            budget.take()
            moved = True
    return moved


def _q_sweep(g: _Graph, moves: list[str], budget: _Budget) -> bool:
    """Move Qs backward in node order; the copies a move leaves before the op move on next, depth first."""
    moved = False
    for node in g.nodes:
        before, after = g.around(node)
        for candidate in [*before, node, *after]:
            stack = [candidate]
            while stack and budget.left > 0:
                q = stack.pop()
                if g.is_removed(q):
                    continue
                copies = _move_q_backward(g, q, moves)
                if copies is not None:
                    budget.take()
                    moved = True
                    stack.extend(reversed(copies))
    return moved


def _propagate(g: _Graph) -> list[str]:
    """Move DQs forward, then Qs backward, until nothing moves; return the moves in the order made.

    The moves are those of the rule "always make the first possible move in node order, DQ moves before
    Q moves": in a topologically sorted graph a DQ move only enables ops further down, a Q move only Qs
    further down or the copies it leaves, and no Q move enables a DQ move, so two ordered sweeps make
    them in that order (a second round only runs for a graph listed out of order).
    """
    moves: list[str] = []
    budget = _Budget(4 * len(g.nodes) + 16)
    while budget.left > 0 and (_dq_sweep(g, moves, budget) | _q_sweep(g, moves, budget)):
        pass
    g.settle()
    return moves


# ----------------------------------------------------------------------------------------------------
# Steps 3-5: pairs, weighted layers, leftovers
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Absorbed:
    dq_uses: set[tuple[int, int, int]] = field(default_factory=set)  # (id(dq), id(consumer), input index)
    qs: set[int] = field(default_factory=set)

    def take_dq(self, g: _Graph, node: _Node, index: int) -> None:
        dq = g.producer_of(node.inputs[index])
        if dq is not None and dq.is_dq:
            self.dq_uses.add((id(dq), id(node), index))


def _scalar(scale: np.ndarray | None) -> float | None:
    return float(scale[0]) if scale is not None and scale.size == 1 else None


def _pairs(g: _Graph, absorbed: _Absorbed) -> tuple[list[Requantization], int]:
    requants: list[Requantization] = []
    cancelled = 0
    for q in g.nodes:
        if q.kind != "act-q":
            continue
        dq = g.producer_of(q.inputs[0])
        if dq is None or not dq.is_dq:
            continue
        absorbed.qs.add(id(q))
        absorbed.take_dq(g, q, 0)
        if _same_scale(dq.scale, q.scale):
            cancelled += 1
            continue
        before = g.producer_of(dq.inputs[0])
        after = [user.label() for user, _ in g.consumers(q.outputs[0])]
        parts = [f"after {before.label()}"] if before is not None and before.kind == "op" else []
        parts += [f"before {', '.join(after)}"] if after else []
        where = ", ".join(parts) or "between a DQ and a Q"
        requants.append(Requantization(dq.origin, q.origin, _scalar(dq.scale), _scalar(q.scale), where))
    return requants, cancelled


def _from_dq(g: _Graph, value: str) -> bool:
    producer = g.producer_of(value)
    return producer is not None and producer.is_dq


def _single_user(g: _Graph, value: str) -> _Node | None:
    users = g.consumers(value)
    if len(users) != 1 or value in g.graph_outputs:
        return None
    return users[0][0]


def _gate_pattern(g: _Graph, value: str) -> tuple[_Node, _Node] | None:
    """x * Sigmoid(x) (SiLU) or x * HardSigmoid(x) (HardSwish) on `value`."""
    users = [u for u, _ in g.consumers(value)]
    if len(users) != 2 or value in g.graph_outputs:
        return None
    gate = next((u for u in users if u.op in ("Sigmoid", "HardSigmoid") and u.inputs[0] == value), None)
    mul = next((u for u in users if u.op == "Mul"), None)
    if gate is None or mul is None or sorted(mul.inputs) != sorted([value, gate.outputs[0]]):
        return None
    if len(g.consumers(gate.outputs[0])) != 1:
        return None
    return gate, mul


def _epilogue(g: _Graph, layer: _Node, absorbed: _Absorbed) -> tuple[list[_Node], list[_Node], str]:
    """Walk the fusible epilogue after `layer`: (fused nodes, the output Qs it reaches, reason if none)."""
    value = layer.outputs[0]
    fused: list[_Node] = []
    while True:
        users = g.consumers(value)
        if value not in g.graph_outputs and users and all(u.kind == "act-q" for u, _ in users):
            for q, _ in users:
                absorbed.qs.add(id(q))
            return fused, [q for q, _ in users], ""
        gate = _gate_pattern(g, value)
        if gate is not None:
            fused.extend(gate)
            value = gate[1].outputs[0]
            continue
        user = _single_user(g, value)
        if user is None:
            if value in g.graph_outputs:
                return fused, [], "output is a graph output"
            return fused, [], "output has several consumers, not only Qs" if users else "output is unused"
        if user.op in rules.POINTWISE_EPILOGUE_OPS and user.inputs[0] == value:
            fused.append(user)
            value = user.outputs[0]
            continue
        if user.op == "Add" and len(user.inputs) == 2:
            fused.append(user)
            other = user.inputs[1] if user.inputs[0] == value else user.inputs[0]
            if not _from_dq(g, other):
                return fused, [], f"residual input of {user.label()} is float, so the output stays float"
            absorbed.take_dq(g, user, user.inputs.index(other))
            value = user.outputs[0]
            continue
        return fused, [], f"output feeds {user.label()}, not a Q"


def _split_fusions(g: _Graph, layer: _Node, qs: list[_Node], absorbed: _Absorbed) -> list[str]:
    """Output Q/DQ pairs between a layer and an activation, BN or Add it could have fused.

    A DQ that is the residual input of another layer's fused Add is the recommended placement, not a split.
    """
    found = []
    for q in qs:
        for dq, _ in g.consumers(q.outputs[0]):
            if not dq.is_dq:
                continue
            for user, index in g.consumers(dq.outputs[0]):
                if user.op not in rules.POINTWISE_EPILOGUE_OPS and user.op != "Add":
                    continue
                if (id(dq), id(user), index) in absorbed.dq_uses and user.op == "Add":
                    continue
                rule = (
                    "recommendation 3: fold BN first"
                    if user.op == "BatchNormalization"
                    else ("recommendations 2 and 5")
                )
                found.append(
                    f"Q/DQ '{q.origin}' between {layer.label()} and {user.label()} splits their "
                    f"fusion: one more layer (placement {rule})"
                )
    return found


def _int8_capable_ops(g: _Graph, absorbed: _Absorbed) -> list[str]:
    """Non-weighted ops whose data inputs all come through DQs and whose consumers are all Qs."""
    found: list[str] = []
    for node in g.nodes:
        if node.kind != "op":
            continue
        rule = _commuting(node)
        if rule is not None:
            producers = [g.producer_of(node.inputs[i]) for i in _data_inputs(node, rule)]
            if producers and all(p is not None and (p.is_q or _int8_op(g, p)) for p in producers):
                found.append(node.label())
            continue
        if node.op not in rules.INT8_CAPABLE_OPS and node.op not in rules.INT8_POINTWISE_OPS:
            continue
        pointwise = node.op in rules.INT8_POINTWISE_OPS
        inputs = [0] if pointwise else [i for i, v in enumerate(node.inputs) if v and v not in g.constants]
        outs = node.outputs[0]
        users = g.consumers(outs)
        if not inputs or not all(_from_dq(g, node.inputs[i]) for i in inputs):
            continue
        if outs in g.graph_outputs or not users or not all(u.kind == "act-q" for u, _ in users):
            continue
        for i in inputs:
            absorbed.take_dq(g, node, i)
        absorbed.qs.update(id(u) for u, _ in users)
        found.append(node.label())
    return found


def _int8_op(g: _Graph, node: _Node, depth: int = 0) -> bool:
    """A commuting op whose data inputs are already INT8 (after propagation) produces INT8."""
    rule = _commuting(node)
    if rule is None or depth > 64:
        return False
    producers = [g.producer_of(node.inputs[i]) for i in _data_inputs(node, rule)]
    return bool(producers) and all(p is not None and (p.is_q or _int8_op(g, p, depth + 1)) for p in producers)


def _reformats(g: _Graph, absorbed: _Absorbed) -> list[Reformat]:
    found: dict[tuple[str, str], Reformat] = {}
    for node in g.nodes:
        if node.kind == "act-dq":
            uses = [(u, i) for u, i in g.consumers(node.outputs[0]) if u.op not in rules.SHAPE_ONLY_OPS]
            loose = [u for u, i in uses if (id(node), id(u), i) not in absorbed.dq_uses]
            targets = [u.label() for u in loose]
            if node.outputs[0] in g.graph_outputs:
                targets.append("a graph output")
            if targets:
                reason = f"feeds {', '.join(targets)}, which does not take INT8 here: a standalone dequantize"
                found.setdefault((node.origin, "DQ"), Reformat(node.origin, "DQ", reason))
        elif node.kind == "act-q" and id(node) not in absorbed.qs and node.inputs[0] not in g.constants:
            producer = g.producer_of(node.inputs[0])
            if producer is None:
                reason = f"quantizes graph input '{node.inputs[0]}' (expected before the first layer)"
            else:
                reason = f"{producer.label()} produces float here: a standalone quantize"
            found.setdefault((node.origin, "Q"), Reformat(node.origin, "Q", reason))
    return list(found.values())


# ----------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------


def predict_fusions(model: ir.Model, excluded: Iterable[str] = ()) -> FusionReport:
    """Simulate TensorRT's Q/DQ processing on `model` (not modified) and predict per-layer precision.

    `excluded` names layers the user kept in float on purpose; their reason reads "excluded".
    """
    excluded_names = set(excluded)
    shapes = model_shapes(model)
    g = _Graph(model)
    moves = _propagate(g)
    absorbed = _Absorbed()
    requants, cancelled = _pairs(g, absorbed)
    layers: list[LayerPrediction] = []
    outputs: list[tuple[_Node, list[_Node]]] = []
    for node in g.nodes:
        if node.kind != "op" or node.ir_node is None:
            continue
        rule = rules.weighted_rule(node.ir_node)
        if rule is None:
            continue
        layers.append(_predict_layer(g, node, rule, shapes, absorbed, excluded_names, outputs))
    splits = [text for node, qs in outputs for text in _split_fusions(g, node, qs, absorbed)]
    requants += [rq for node, qs in outputs for rq in _output_requantizations(node, qs)]
    int8_ops = _int8_capable_ops(g, absorbed)
    reformats = _reformats(g, absorbed)
    total = sum(layer.macs or 0 for layer in layers)
    int8 = sum(layer.macs or 0 for layer in layers if layer.precision == "int8")
    return FusionReport(layers, requants, reformats, int8_ops, splits, cancelled, moves, total, int8)


def _predict_layer(
    g: _Graph,
    node: _Node,
    rule: rules.WeightedOpRule,
    shapes: dict,
    absorbed: _Absorbed,
    excluded: set[str],
    outputs: list[tuple[_Node, list[_Node]]],
) -> LayerPrediction:
    assert node.ir_node is not None
    macs = layer_macs(node.ir_node, shapes)
    act_ok = rule.activation_input < len(node.inputs) and _from_dq(g, node.inputs[rule.activation_input])
    weight_ok = rule.weight_input < len(node.inputs) and _from_dq(g, node.inputs[rule.weight_input])
    if not (act_ok and weight_ok):
        if node.name in excluded:
            reason = "excluded"
        elif not act_ok and not weight_ok:
            reason = "activation input and weight not quantized"
        else:
            reason = "activation input not quantized" if not act_ok else "weight not quantized"
        return LayerPrediction(node.name, node.op, macs, "float", "float", reason)
    absorbed.take_dq(g, node, rule.activation_input)
    absorbed.take_dq(g, node, rule.weight_input)
    fused, out_qs, why = _epilogue(g, node, absorbed)
    outputs.append((node, out_qs))
    names = [f.origin or f.name for f in fused]
    reason = "" if out_qs else f"INT8 in, float out: {why}"
    return LayerPrediction(node.name, node.op, macs, "int8", "int8" if out_qs else "float", reason, names)


def _output_requantizations(layer: _Node, qs: list[_Node]) -> list[Requantization]:
    """An INT8 layer has one output scale (its first Q's): each further Q with another scale requantizes.

    This is what a scale-group member left untied by unify-scales costs (it also feeds the group's Q).
    """
    first = qs[0] if qs else None
    return [
        Requantization(
            first.origin,
            q.origin,
            _scalar(first.scale),
            _scalar(q.scale),
            f"after {layer.label()}, whose output feeds Qs of different scales",
        )
        for q in qs[1:]
        if first is not None and not _same_scale(first.scale, q.scale)
    ]


def _fmt_macs(macs: int | None) -> str:
    if macs is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= size:
            return f"{macs / size:.2f}{unit}"
    return str(macs)


def _fmt_scale(scale: float | None) -> str:
    return "per-channel/unknown" if scale is None else f"{scale:.6g}"


def format_report(report: FusionReport) -> str:
    """A readable table of the prediction (layers, requantizations, reformats, INT8 MAC share)."""
    lines = ["TensorRT fusion prediction", f"  ({report.note})", ""]
    header = ("layer", "op", "MACs", "compute", "output", "fused epilogue", "why")
    rows = [
        (
            lp.name,
            lp.op,
            _fmt_macs(lp.macs),
            lp.precision,
            lp.output,
            " + ".join(lp.fused) or "-",
            lp.reason or "-",
        )
        for lp in report.layers
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  " + "  ".join(cells) + "  " + str(row[-1]))
    if not rows:
        lines.append("  (no Conv/ConvTranspose/Gemm/MatMul layers)")
    count = len(report.requantizations)
    lines += ["", f"Requantizations (DQ->Q with different scales; each stays as a layer): {count}"]
    for rq in report.requantizations:
        scales = f"{_fmt_scale(rq.dq_scale)} -> {_fmt_scale(rq.q_scale)}"
        lines.append(f"  {rq.dq} -> {rq.q} (scale {scales}) {rq.at}")
    lines += ["", f"Standalone Q/DQ (predicted reformat layers): {len(report.reformats)}"]
    for rf in report.reformats:
        lines.append(f"  {rf.kind:<2} {rf.node}: {rf.reason}")
    lines += [
        "",
        f"Split fusions (Q/DQ between a layer and its epilogue): {len(report.split_fusions)}",
        *(f"  {text}" for text in report.split_fusions),
        f"Cancelled DQ->Q pairs (equal scales): {report.cancelled_pairs}",
        f"Other INT8 ops: {', '.join(report.int8_ops) if report.int8_ops else '-'}",
        f"INT8 MAC share: {100 * report.int8_mac_share:.1f}% ({_fmt_macs(report.int8_macs)} of "
        f"{_fmt_macs(report.total_macs)} MACs in Conv/ConvTranspose/Gemm/MatMul)",
    ]
    return "\n".join(lines)


def report_to_json(report: FusionReport) -> dict[str, Any]:
    """A JSON-ready dict of the report (the share included)."""
    data = dataclasses.asdict(report)
    data["int8_mac_share"] = report.int8_mac_share
    return data

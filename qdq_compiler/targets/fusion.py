"""Predict how TensorRT will fuse a Q/DQ model: which weighted layers run INT8, where requantizations and
reformat layers stay. An offline simulation of TensorRT's documented Q/DQ processing, not a build.

The simulation (rules from targets/trt_rules.py):
1. copy the IR and move activation DQs forward and Qs backward across commuting ops until nothing moves,
   as rewrite patterns under the shared greedy driver (targets/qdq_propagation.py; Concat only moves DQs
   when all its inputs share one scale, Q moves need the op's output to feed that Q alone); Q/DQ of
   constants (weights, biases) do not move;
2. on the rewritten copy, a DQ directly followed by a Q is a pair: equal per-tensor scales cancel,
   otherwise a requantization;
3. a weighted op computes in INT8 when its activation and weight inputs both come from DQs; its output
   is INT8 when, after its fusible epilogue (activations, BN, SiLU, a residual Add fed by a DQ), every
   consumer is a Q;
4. a DQ with a consumer that does not absorb it, and a Q no INT8 producer absorbs, become reformat layers.

MACs come from targets/macs.py. The input model is not modified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from qdq_compiler.collector import collector_paused
from qdq_compiler.ir.op_facts import GATE_OPS
from qdq_compiler.targets import trt_rules as rules
from qdq_compiler.targets.constant_arrays import ConstantArrays
from qdq_compiler.targets.macs import layer_macs, model_shapes
from qdq_compiler.targets.qdq_propagation import Propagated, propagate, same_scale

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
# Steps 2-4 on the propagated copy: pairs, weighted layers, leftovers
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Absorbed:
    dq_uses: set[tuple[int, int, int]] = field(default_factory=set)  # (id(dq), id(consumer), input index)
    qs: set[int] = field(default_factory=set)


class _View:
    """Read-only queries on the propagated copy, and what the layers found so far absorb."""

    def __init__(self, propagated: Propagated):
        self.graph = propagated.graph
        self.facts = propagated.facts
        self.nodes = list(self.graph)  # in graph order: the steps below walk it several times, never edit
        self.position = {node: index for index, node in enumerate(self.nodes)}
        self.constants = propagated.constants
        self.dequantized_weights = propagated.dequantized_weights
        self.absorbed = _Absorbed()

    def consumers(self, value: ir.Value | None) -> list[tuple[ir.Node, int]]:
        """The nodes reading `value` and at which input, in graph order, then input order."""
        if value is None:
            return []
        uses = [(use.node, use.idx) for use in value.uses()]
        if len(uses) > 1:
            uses.sort(key=lambda use: (self.position[use[0]], use[1]))
        return uses

    def from_dq(self, value: ir.Value | None) -> bool:
        """Whether `value` is a DQ's output (a weight's DQ left out of the copy included)."""
        return value is not None and (self.facts.is_dq(value.producer()) or value in self.dequantized_weights)

    def single_user(self, value: ir.Value) -> ir.Node | None:
        users = self.consumers(value)
        if len(users) != 1 or value.is_graph_output():
            return None
        return users[0][0]

    def take_dq(self, node: ir.Node, index: int) -> None:
        value = node.inputs[index]
        dq = value.producer() if value is not None else None
        if dq is not None and self.facts.is_dq(dq):
            self.absorbed.dq_uses.add((id(dq), id(node), index))

    def is_op(self, node: ir.Node | None) -> bool:
        return node is not None and self.facts.kind(node) == "op"


def _scalar(scale: np.ndarray | None) -> float | None:
    return float(scale[0]) if scale is not None and scale.size == 1 else None


def _pairs(v: _View) -> tuple[list[Requantization], int]:
    facts = v.facts
    requants: list[Requantization] = []
    cancelled = 0
    for q in v.nodes:
        if facts.kind(q) != "act-q" or q.inputs[0] is None:
            continue
        dq = q.inputs[0].producer()
        if dq is None or not facts.is_dq(dq):
            continue
        v.absorbed.qs.add(id(q))
        v.take_dq(q, 0)
        if same_scale(facts.scales[dq], facts.scales[q]):
            cancelled += 1
            continue
        before = dq.inputs[0].producer() if dq.inputs[0] is not None else None
        after = [facts.label(user) for user, _ in v.consumers(q.outputs[0])]
        parts = [f"after {facts.label(before)}"] if before is not None and v.is_op(before) else []
        parts += [f"before {', '.join(after)}"] if after else []
        where = ", ".join(parts) or "between a DQ and a Q"
        requants.append(
            Requantization(
                facts.names[dq],
                facts.names[q],
                _scalar(facts.scales[dq]),
                _scalar(facts.scales[q]),
                where,
            )
        )
    return requants, cancelled


def _gate_pattern(v: _View, value: ir.Value) -> tuple[ir.Node, ir.Node] | None:
    """x * Sigmoid(x) (SiLU) or x * HardSigmoid(x) (HardSwish) on `value`."""
    users = [u for u, _ in v.consumers(value)]
    if len(users) != 2 or value.is_graph_output():
        return None
    gate = next((u for u in users if u.op_type in GATE_OPS and u.inputs[0] is value), None)
    mul = next((u for u in users if u.op_type == "Mul"), None)
    if (
        gate is None
        or mul is None
        or sorted(map(id, mul.inputs)) != sorted(map(id, [value, gate.outputs[0]]))
    ):
        return None
    if len(gate.outputs[0].uses()) != 1:
        return None
    return gate, mul


def _epilogue(v: _View, layer: ir.Node) -> tuple[list[ir.Node], list[ir.Node], str]:
    """Walk the fusible epilogue after `layer`: (fused nodes, the output Qs it reaches, reason if none)."""
    facts = v.facts
    value = layer.outputs[0]
    fused: list[ir.Node] = []
    while True:
        users = v.consumers(value)
        if not value.is_graph_output() and users and all(facts.kind(u) == "act-q" for u, _ in users):
            for q, _ in users:
                v.absorbed.qs.add(id(q))
            return fused, [q for q, _ in users], ""
        gate = _gate_pattern(v, value)
        if gate is not None:
            fused.extend(gate)
            value = gate[1].outputs[0]
            continue
        user = v.single_user(value)
        if user is None:
            if value.is_graph_output():
                return fused, [], "output is a graph output"
            return fused, [], "output has several consumers, not only Qs" if users else "output is unused"
        if user.op_type in rules.POINTWISE_EPILOGUE_OPS and user.inputs[0] is value:
            fused.append(user)
            value = user.outputs[0]
            continue
        if user.op_type == "Add" and len(user.inputs) == 2:
            fused.append(user)
            index = 1 if user.inputs[0] is value else 0
            if not v.from_dq(user.inputs[index]):
                return fused, [], f"residual input of {facts.label(user)} is float, so the output stays float"
            v.take_dq(user, index)
            value = user.outputs[0]
            continue
        return fused, [], f"output feeds {facts.label(user)}, not a Q"


def _split_fusions(v: _View, layer: ir.Node, qs: list[ir.Node]) -> list[str]:
    """Output Q/DQ pairs between a layer and an activation, BN or Add it could have fused.

    A DQ that is the residual input of another layer's fused Add is the recommended placement, not a split.
    """
    facts = v.facts
    found = []
    for q in qs:
        for dq, _ in v.consumers(q.outputs[0]):
            if not facts.is_dq(dq):
                continue
            for user, index in v.consumers(dq.outputs[0]):
                if user.op_type not in rules.POINTWISE_EPILOGUE_OPS and user.op_type != "Add":
                    continue
                if (id(dq), id(user), index) in v.absorbed.dq_uses and user.op_type == "Add":
                    continue
                rule = (
                    "recommendation 3: fold BN first"
                    if user.op_type == "BatchNormalization"
                    else ("recommendations 2 and 5")
                )
                found.append(
                    f"Q/DQ '{facts.names[q]}' between {facts.label(layer)} and {facts.label(user)} splits "
                    f"their fusion: one more layer (placement {rule})"
                )
    return found


def _int8_capable_ops(v: _View) -> list[str]:
    """Non-weighted ops whose data inputs all come through DQs and whose consumers are all Qs."""
    facts = v.facts
    found: list[str] = []
    int8: dict[ir.Node, bool] = {}
    for node in v.nodes:
        if not v.is_op(node):
            continue
        indices = facts.data_inputs(node)
        if indices is not None:
            if _int8_op(v, node, int8):
                found.append(facts.label(node))
            continue
        if node.op_type not in rules.INT8_CAPABLE_OPS and node.op_type not in rules.INT8_POINTWISE_OPS:
            continue
        pointwise = node.op_type in rules.INT8_POINTWISE_OPS
        inputs = (
            [0]
            if pointwise
            else [i for i, value in enumerate(node.inputs) if value is not None and value not in v.constants]
        )
        out = node.outputs[0]
        users = v.consumers(out)
        if not inputs or not all(v.from_dq(node.inputs[i]) for i in inputs):
            continue
        if out.is_graph_output() or not users or not all(facts.kind(u) == "act-q" for u, _ in users):
            continue
        for i in inputs:
            v.take_dq(node, i)
        v.absorbed.qs.update(id(u) for u, _ in users)
        found.append(facts.label(node))
    return found


def _int8_op(v: _View, node: ir.Node, known: dict[ir.Node, bool]) -> bool:
    """A commuting op whose data inputs are already INT8 (a Q, or such an op) after propagation produces
    INT8. `known` remembers the answer per op; producers are settled first, without recursion."""
    if node in known:
        return known[node]
    stack = [node]
    while stack:
        top = stack[-1]
        producers = [top.inputs[i].producer() for i in v.facts.data_inputs(top) or []]  # type: ignore[union-attr]
        pending = [p for p in producers if p is not None and p in v.facts.commuting and p not in known]
        if pending and top not in known:
            known[top] = False  # while its producers settle (a cycle, impossible in ONNX, ends here)
            stack.extend(pending)
            continue
        stack.pop()
        known[top] = bool(producers) and all(
            p is not None and (v.facts.is_q(p) or known.get(p, False)) for p in producers
        )
    return known[node]


def _reformats(v: _View) -> list[Reformat]:
    facts = v.facts
    found: dict[tuple[str, str], Reformat] = {}
    for node in v.nodes:
        kind = facts.kind(node)
        if kind == "act-dq":
            out = node.outputs[0]
            uses = [(u, i) for u, i in v.consumers(out) if u.op_type not in rules.SHAPE_ONLY_OPS]
            loose = [u for u, i in uses if (id(node), id(u), i) not in v.absorbed.dq_uses]
            targets = [facts.label(u) for u in loose]
            if out.is_graph_output():
                targets.append("a graph output")
            if targets:
                reason = f"feeds {', '.join(targets)}, which does not take INT8 here: a standalone dequantize"
                origin = facts.names[node]
                found.setdefault((origin, "DQ"), Reformat(origin, "DQ", reason))
        elif kind == "act-q" and id(node) not in v.absorbed.qs and node.inputs[0] not in v.constants:
            data = node.inputs[0]
            producer = data.producer() if data is not None else None
            if producer is None:
                name = data.name if data is not None else ""
                reason = f"quantizes graph input '{name}' (expected before the first layer)"
            else:
                reason = f"{facts.label(producer)} produces float here: a standalone quantize"
            origin = facts.names[node]
            found.setdefault((origin, "Q"), Reformat(origin, "Q", reason))
    return list(found.values())


# ----------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------


def predict_fusions(
    model: ir.Model, excluded: Iterable[str] = (), constants: ConstantArrays | None = None
) -> FusionReport:
    """Simulate TensorRT's Q/DQ processing on a copy of `model` (not modified); predict per-layer precision.

    `excluded` names layers the user kept in float on purpose; their reason reads "excluded". Pass
    `constants` to share decoded constants with other work on the same model (`qdqc explain`).
    """
    with collector_paused():
        return _predict(model, set(excluded), constants)


def _predict(model: ir.Model, excluded_names: set[str], constants: ConstantArrays | None) -> FusionReport:
    shapes = model_shapes(model)
    propagated = propagate(model.graph, constants)
    v = _View(propagated)
    requants, cancelled = _pairs(v)
    layers: list[LayerPrediction] = []
    outputs: list[tuple[ir.Node, list[ir.Node]]] = []
    for node in v.nodes:
        if not v.is_op(node):
            continue
        rule = rules.weighted_rule(node)
        if rule is None:
            continue
        original = propagated.facts.originals[node]
        macs = layer_macs(original, shapes)
        layers.append(_predict_layer(v, node, rule, macs, excluded_names, outputs))
    splits = [text for node, qs in outputs for text in _split_fusions(v, node, qs)]
    requants += [rq for node, qs in outputs for rq in _output_requantizations(v, node, qs)]
    int8_ops = _int8_capable_ops(v)
    reformats = _reformats(v)
    total = sum(layer.macs or 0 for layer in layers)
    int8 = sum(layer.macs or 0 for layer in layers if layer.precision == "int8")
    moves = propagated.facts.moves
    return FusionReport(layers, requants, reformats, int8_ops, splits, cancelled, moves, total, int8)


def _predict_layer(
    v: _View,
    node: ir.Node,
    rule: rules.WeightedOpRule,
    macs: int | None,
    excluded: set[str],
    outputs: list[tuple[ir.Node, list[ir.Node]]],
) -> LayerPrediction:
    name = v.facts.name(node)
    act_ok = rule.activation_input < len(node.inputs) and v.from_dq(node.inputs[rule.activation_input])
    weight_ok = rule.weight_input < len(node.inputs) and v.from_dq(node.inputs[rule.weight_input])
    if not (act_ok and weight_ok):
        if name in excluded:
            reason = "excluded"
        elif not act_ok and not weight_ok:
            reason = "activation input and weight not quantized"
        else:
            reason = "activation input not quantized" if not act_ok else "weight not quantized"
        return LayerPrediction(name, node.op_type, macs, "float", "float", reason)
    v.take_dq(node, rule.activation_input)
    v.take_dq(node, rule.weight_input)
    fused, out_qs, why = _epilogue(v, node)
    outputs.append((node, out_qs))
    names = [v.facts.name(f) for f in fused]
    reason = "" if out_qs else f"INT8 in, float out: {why}"
    return LayerPrediction(name, node.op_type, macs, "int8", "int8" if out_qs else "float", reason, names)


def _output_requantizations(v: _View, layer: ir.Node, qs: list[ir.Node]) -> list[Requantization]:
    """An INT8 layer has one output scale (its first Q's): each further Q with another scale requantizes.

    This is what a scale-group member left untied by unify-scales costs (it also feeds the group's Q).
    """
    facts = v.facts
    first = qs[0] if qs else None
    return [
        Requantization(
            facts.names[first],
            facts.names[q],
            _scalar(facts.scales[first]),
            _scalar(facts.scales[q]),
            f"after {facts.label(layer)}, whose output feeds Qs of different scales",
        )
        for q in qs[1:]
        if first is not None and not same_scale(facts.scales[first], facts.scales[q])
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

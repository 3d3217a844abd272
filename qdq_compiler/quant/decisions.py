"""Which weighted layers run INT8 and why the others stay float, kept on the model for reports."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

DECISIONS_META_KEY = "qdqc.layer_decisions"


@dataclass(frozen=True)
class LayerDecision:
    """One weighted layer: INT8 or float, and the reason when float."""

    node_name: str
    op_type: str
    int8: bool
    reason: str = ""


def record_decisions(model: ir.Model, decisions: list[LayerDecision]) -> None:
    """Store the decisions in the model's in-memory metadata (merged by node name)."""
    existing: dict[str, LayerDecision] = model.meta.get(DECISIONS_META_KEY, {})
    for decision in decisions:
        previous = existing.get(decision.node_name)
        if previous is None or not previous.int8 or decision.int8:
            existing[decision.node_name] = decision
    model.meta[DECISIONS_META_KEY] = existing


def layer_decisions(model: ir.Model) -> dict[str, LayerDecision]:
    """The recorded decisions, by node name (empty when place-qdq did not run in this process)."""
    return dict(model.meta.get(DECISIONS_META_KEY, {}))


def mark_float(model: ir.Model, node: ir.Node, reason: str) -> None:
    """Record that weighted layer ``node`` ends up float after all (a later pass removed its input Q/DQ)."""
    decisions: dict[str, LayerDecision] = model.meta.get(DECISIONS_META_KEY, {})
    name = node.name or node.op_type
    decisions[name] = LayerDecision(name, node.op_type, False, reason)
    model.meta[DECISIONS_META_KEY] = decisions

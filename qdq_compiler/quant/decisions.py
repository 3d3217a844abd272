"""Which weighted layers run INT8 and why the others stay float, kept in the model (state
``qdq_compiler.layer_decisions``) for the compile summary, sensitivity and later commands.

Stored as a list in graph order, one object per layer: ``{"node": name, "op": op type, "int8": bool}`` plus
``"reason"`` for a float layer. The compiled model keeps it: it is small (one entry per weighted layer) and
says why a layer stayed float, which the graph alone does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir.state import model_state, set_model_state

DECISIONS_STATE = "layer_decisions"


@dataclass(frozen=True)
class LayerDecision:
    """One weighted layer: INT8 or float, and the reason when float."""

    node_name: str
    op_type: str
    int8: bool
    reason: str = ""


def record_decisions(model: ir.Model, decisions: list[LayerDecision]) -> None:
    """Store the decisions in the model (merged by node name: a float decision does not undo an INT8 one)."""
    existing = layer_decisions(model)
    for decision in decisions:
        previous = existing.get(decision.node_name)
        if previous is None or not previous.int8 or decision.int8:
            existing[decision.node_name] = decision
    _store(model, existing)


def layer_decisions(model: ir.Model) -> dict[str, LayerDecision]:
    """The recorded decisions, by node name in graph order (empty when place-qdq has not run)."""
    stored = model_state(model, DECISIONS_STATE) or []
    try:
        decisions = [
            LayerDecision(str(item["node"]), str(item["op"]), bool(item["int8"]), str(item.get("reason", "")))
            for item in stored
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise QdqcError(
            f"the model's metadata 'qdq_compiler.{DECISIONS_STATE}' is malformed ({exc!r})"
        ) from None
    return {decision.node_name: decision for decision in decisions}


def mark_float(model: ir.Model, node: ir.Node, reason: str) -> None:
    """Record that weighted layer ``node`` ends up float after all (a later pass removed its input Q/DQ)."""
    decisions = layer_decisions(model)
    name = node.name or node.op_type
    decisions[name] = LayerDecision(name, node.op_type, False, reason)
    _store(model, decisions)


def forget_decisions(model: ir.Model) -> None:
    """Drop the recorded decisions (the model's Q/DQ were removed: they no longer hold)."""
    set_model_state(model, DECISIONS_STATE, None)


def _store(model: ir.Model, decisions: dict[str, LayerDecision]) -> None:
    items = []
    for decision in decisions.values():
        item: dict[str, object] = {"node": decision.node_name, "op": decision.op_type, "int8": decision.int8}
        if decision.reason:
            item["reason"] = decision.reason
        items.append(item)
    set_model_state(model, DECISIONS_STATE, items)

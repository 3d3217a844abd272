"""Small pictures of the graph around a float layer or a predicted requantization, as plain data.

The neighbourhood walks ``RADIUS`` ops up and down from the subject; Q/DQ nodes on the way are shown but do
not count as a step, weight Q/DQ and constants are left out (every INT8 layer has them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import onnx_ir as ir

from qdq_compiler.ir.op_facts import is_weight_qdq, weighted_op
from qdq_compiler.ir.qdq import is_dequantize, is_quantize
from qdq_compiler.quant.decisions import LayerDecision, layer_decisions
from qdq_compiler.report.data import GraphNode, GraphPicture
from qdq_compiler.targets.fusion import Requantization

RADIUS = 2
MAX_NODES = 24


def _hidden(node: ir.Node) -> bool:
    return node.op_type == "Constant" or ((is_quantize(node) or is_dequantize(node)) and is_weight_qdq(node))


def _neighbours(node: ir.Node) -> Iterable[ir.Node]:
    for value in node.inputs:
        producer = value.producer() if value is not None else None
        if producer is not None:
            yield producer
    for value in node.outputs:
        for user, _ in value.uses():
            yield user


def neighbourhood(subjects: Sequence[ir.Node]) -> list[ir.Node]:
    """The subjects and the nodes within RADIUS op steps of them (Q/DQ steps free), at most MAX_NODES."""
    cost = {id(node): 0 for node in subjects}
    found = list(subjects)
    frontier = list(subjects)
    while frontier and len(found) < MAX_NODES:
        node = frontier.pop(0)
        for other in _neighbours(node):
            if _hidden(other) or id(other) in cost:
                continue
            step = 0 if (is_quantize(other) or is_dequantize(other)) else 1
            if cost[id(node)] + step > RADIUS or len(found) >= MAX_NODES:
                continue
            cost[id(other)] = cost[id(node)] + step
            found.append(other)
            frontier.append(other)
    return found


def _kind(node: ir.Node, int8_layers: set[str]) -> str:
    if is_quantize(node):
        return "q"
    if is_dequantize(node):
        return "dq"
    if weighted_op(node) is not None:
        return "int8" if node.name in int8_layers else "float"
    return "op"


def picture(model: ir.Model, subjects: Sequence[ir.Node], title: str, caption: str) -> GraphPicture:
    """The picture of ``subjects`` and their neighbourhood, in graph order."""
    int8_layers = {d.node_name for d in layer_decisions(model).values() if d.int8}
    chosen = neighbourhood(subjects)
    keep = {id(node) for node in chosen}
    order = [node for node in model.graph if id(node) in keep]
    keys = {id(node): str(index) for index, node in enumerate(order)}
    focus = {id(node) for node in subjects}
    nodes = [
        GraphNode(
            keys[id(node)],
            _label(node),
            _kind(node, int8_layers),
            id(node) in focus,
        )
        for node in order
    ]
    edges = [
        (keys[id(node)], keys[id(user)])
        for node in order
        for value in node.outputs
        for user, _ in value.uses()
        if id(user) in keep
    ]
    return GraphPicture(title, caption, nodes, sorted(set(edges), key=lambda e: (int(e[0]), int(e[1]))))


def _label(node: ir.Node) -> str:
    """Two lines: the op ('Q'/'DQ' for Q/DQ) and the end of the node's name."""
    op = "Q" if is_quantize(node) else "DQ" if is_dequantize(node) else node.op_type
    return f"{op}\n{_short_name(node)}"


def _short_name(node: ir.Node) -> str:
    """The last two parts of a '/a/b/c/Conv'-style name (the op type is shown on its own line)."""
    name = node.name or (node.outputs[0].name if node.outputs else "") or ""
    parts = [part for part in name.split("/") if part]
    if parts and parts[-1] in (node.op_type, f"{node.op_type}_0"):
        parts = parts[:-1]
    return "/".join(parts[-2:]) or name


def float_layer_pictures(model: ir.Model, decisions: Iterable[LayerDecision]) -> list[GraphPicture]:
    """One picture per float weighted layer (found by name), its reason as the caption."""
    nodes = {node.name: node for node in model.graph if node.name}
    return [
        picture(model, [nodes[d.node_name]], d.node_name, f"float: {d.reason}")
        for d in decisions
        if d.node_name in nodes
    ]


def requantization_pictures(model: ir.Model, requantizations: Iterable[Requantization]) -> list[GraphPicture]:
    """One picture per predicted requantization, around its DQ and Q (those found by name)."""
    nodes = {node.name: node for node in model.graph if node.name}
    pictures = []
    for item in requantizations:
        subjects = [nodes[name] for name in (item.dq, item.q) if name in nodes]
        if subjects:
            scales = f"{item.dq_scale:.4g} -> {item.q_scale:.4g}" if item.dq_scale and item.q_scale else ""
            pictures.append(
                picture(
                    model, subjects, f"requantization {item.dq} -> {item.q}", f"{item.at} {scales}".strip()
                )
            )
    return pictures

"""Typed reads of the def-use graph where a pass relies on a value being there.

onnx-ir types every node input as ``Value | None`` (ONNX optional inputs) and every producer as
``Node | None`` (graph inputs and initializers have none). These helpers return the value itself, or raise a
ValueError naming the node, so a pass never dereferences None; the pass manager reports it as that pass's
failure.
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["input_of", "producer_of"]


def input_of(node: ir.Node, index: int) -> ir.Value:
    """Input ``index`` of ``node``; ValueError when the node has no such input or it is left out."""
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        raise ValueError(f"{node.op_type} node {node.name or '<unnamed>'!r} has no input {index}")
    return value


def producer_of(value: ir.Value) -> ir.Node:
    """The node that computes ``value``; ValueError for a graph input or initializer."""
    producer = value.producer()
    if producer is None:
        raise ValueError(f"value {value.name or '<unnamed>'!r} is not computed by a node")
    return producer

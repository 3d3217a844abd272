"""The part of an ONNX graph some tensors need: for onnxruntime sessions that skip TensorRT plugins."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

__all__ = ["ONNXRUNTIME_DOMAINS", "cut_to", "names_read_by_subgraphs", "nodes_needed_for"]

# operator domains onnxruntime's CPU provider implements
ONNXRUNTIME_DOMAINS = (
    "",
    "ai.onnx",
    "ai.onnx.ml",
    "com.microsoft",
    "com.microsoft.nchwc",
    "ai.onnx.preview.training",
)


def nodes_needed_for(graph: onnx.GraphProto, names: Sequence[str]) -> list[int]:
    """Indexes (in graph order) of the nodes that computing ``names`` runs."""
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output if name}
    needed: set[int] = set()
    stack, seen = list(names), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        index = producer.get(name)
        if index is None or index in needed:
            continue
        needed.add(index)
        node = graph.node[index]
        stack.extend(value for value in node.input if value)
        stack.extend(names_read_by_subgraphs(node))
    return sorted(needed)


def cut_to(graph: onnx.GraphProto, outputs: Sequence[str]) -> list[onnx.NodeProto]:
    """Make ``outputs`` the graph's outputs and keep only the nodes they need (in place); return the rest.

    The new outputs carry names only: onnxruntime infers their types.
    """
    needed = set(nodes_needed_for(graph, outputs))
    kept = [node for index, node in enumerate(graph.node) if index in needed]
    dropped = [node for index, node in enumerate(graph.node) if index not in needed]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.output[:]
    graph.output.extend(onnx.ValueInfoProto(name=name) for name in dict.fromkeys(outputs))
    return dropped


def names_read_by_subgraphs(node: onnx.NodeProto) -> list[str]:
    """Every value name the subgraphs of ``node`` read (their own names too: harmless over-approximation)."""
    names: list[str] = []
    for attribute in node.attribute:
        for graph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            for inner in graph.node:
                names.extend(value for value in inner.input if value)
                names.extend(names_read_by_subgraphs(inner))
            names.extend(value.name for value in graph.output)
    return names

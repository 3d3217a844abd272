"""Read-only views of the IR for analyses: a networkx graph of nodes, op counts."""

from __future__ import annotations

from collections import Counter

import networkx as nx
import onnx_ir as ir


def to_networkx(graph: ir.Graph) -> nx.DiGraph:
    """Directed graph whose nodes are IR nodes (attribute `node`), edges labelled by the value."""
    view: nx.DiGraph[ir.Node] = nx.DiGraph()
    for node in graph:
        view.add_node(node, op_type=node.op_type)
    for node in graph:
        for value in node.outputs:
            for user, _ in value.uses():
                if user.graph is graph:
                    view.add_edge(node, user, value=value.name)
    return view


def op_counts(graph: ir.Graph) -> Counter[str]:
    """How many nodes of each op type the graph holds."""
    return Counter(node.op_type for node in graph)

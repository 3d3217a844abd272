"""Read-only views of the IR for analyses: a networkx graph of nodes, reachability, op counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

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


def nodes_reaching(graph: ir.Graph, is_target: Callable[[ir.Node], bool]) -> set[int]:
    """ids of the nodes from which a target node is reachable along one or more edges (`graph` sorted).

    One backward sweep: a node reaches a target when one of its users is a target or reaches one.
    """
    reaching: set[int] = set()
    for node in reversed(list(graph)):
        users = (user for value in node.outputs for user, _ in value.uses())
        if any(is_target(user) or id(user) in reaching for user in users):
            reaching.add(id(node))
    return reaching


def all_nodes(graph: ir.Graph) -> Iterator[ir.Node]:
    """Every node of `graph` and of its subgraphs, each subgraph's nodes right after the node holding it:
    the order of onnx-ir's `graph.all_nodes()`, without its per-node generator chain (a second per lint
    of a 20k-node model)."""
    for node in graph:
        yield node
        if not node.attributes:
            continue
        for attr in node.attributes.values():
            if attr.is_ref():
                continue
            if attr.type == ir.AttributeType.GRAPH:
                yield from all_nodes(attr.as_graph())
            elif attr.type == ir.AttributeType.GRAPHS:
                for subgraph in attr.as_graphs():
                    yield from all_nodes(subgraph)


def op_counts(graph: ir.Graph) -> Counter[str]:
    """How many nodes of each op type the graph holds."""
    return Counter(node.op_type for node in graph)

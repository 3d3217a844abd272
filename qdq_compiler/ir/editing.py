"""Graph edits: the one way passes mutate the IR, keeping def-use and names consistent."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.tensor_data import tensor_array


def all_value_names(graph: ir.Graph) -> set[str]:
    """Names of every value in the graph: inputs, initializers and node outputs."""
    names = {v.name for v in graph.inputs if v.name}
    names.update(name for name in graph.initializers)
    for node in graph:
        names.update(v.name for v in node.outputs if v.name)
    return names


class NameScope:
    """Hands out value and node names that are unique in one graph and deterministic.

    Scans the graph's names once, when first asked for a name (or told to :meth:`scan`), and is then kept
    up to date by whoever edits the graph: every name it hands out is taken, and `reserve_*` records names
    made elsewhere. A name is never handed out twice while the scope lives, even if its node is erased
    meanwhile: an editor that frees a name calls :meth:`scan` first (the Rewriter does), so the names
    the graph had are all taken. Each base name remembers where its suffix search stopped, so asking for
    `Relu_<n>` a thousand times stays linear. A pass that never names anything costs no scan.
    """

    def __init__(self, graph: ir.Graph):
        self._graph = graph
        self._scanned = False
        self._values: set[str] = set()  # taken value names (before the scan: those reserved)
        self._nodes: set[str] = set()  # taken node names (before the scan: those reserved)
        self._next_suffix: dict[tuple[str, bool, bool], int] = {}

    def scan(self) -> None:
        """Take every name the graph has now (once; later calls do nothing)."""
        if self._scanned:
            return
        self._scanned = True
        self._values |= all_value_names(self._graph)
        self._nodes |= {node.name for node in self._graph if node.name}

    def value(self, base: str) -> str:
        """A fresh value name: `base`, else `base_1`, `base_2`, ..."""
        return self._fresh(base, self._values, is_node=False, numbered=False)

    def node(self, base: str) -> str:
        """A fresh node name: `base`, else `base_1`, `base_2`, ..."""
        return self._fresh(base, self._nodes, is_node=True, numbered=False)

    def numbered_node(self, prefix: str) -> str:
        """A fresh node name `prefix_<n>` with the smallest free n >= 0 (`Relu_0`, `Relu_1`, ...)."""
        return self._fresh(prefix, self._nodes, is_node=True, numbered=True)

    def reserve_value(self, name: str | None) -> None:
        """Record a value name made outside this scope so it is never handed out."""
        if name:
            self._values.add(name)

    def reserve_node(self, name: str | None) -> None:
        """Record a node name made outside this scope so it is never handed out."""
        if name:
            self._nodes.add(name)

    def _fresh(self, base: str, taken: set[str], *, is_node: bool, numbered: bool) -> str:
        # Names are only ever added while the scope lives, so every suffix below the remembered one
        # is still taken and the search can resume there: the first free name, as a scan from 0 finds.
        if not self._scanned:
            self.scan()
        if not numbered and base not in taken:
            taken.add(base)  # the common case: a base name nobody has
            return base
        key = (base, is_node, numbered)
        suffix = self._next_suffix.get(key, 0)
        while True:
            name = f"{base}_{suffix}" if numbered or suffix else base
            if name not in taken:
                break
            suffix += 1
        self._next_suffix[key] = suffix + 1
        taken.add(name)
        return name


def add_constant(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    """Register `array` as an initializer named `name` (made unique) and return its value."""
    unique = name if name not in graph.initializers else NameScope(graph).value(name)
    # ir.Tensor directly: what ir.tensor() makes of an ndarray, without its slow protocol isinstance checks
    tensor = ir.Tensor(np.asarray(array, order="C"), name=unique)
    value = ir.Value(
        name=unique, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
    )
    graph.initializers[unique] = value  # register_initializer's checks hold: a fresh name, a constant value
    return value


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy array of a constant value (initializer or Constant node output), else None."""
    tensor = _constant_tensor(value)
    return tensor_array(tensor) if tensor is not None else None


def is_constant(value: ir.Value | None) -> bool:
    """Whether `constant_array(value)` has an array, without reading it: a loaded initializer is decoded
    from its proto at every read."""
    return _constant_tensor(value) is not None


def _constant_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The tensor of a constant value (initializer or Constant node output), else None."""
    if value is None:
        return None
    if value.const_value is not None and not value.is_graph_input():
        return value.const_value
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx"):
        attr = producer.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR:
            return attr.as_tensor()
    return None


def insert_on_edge(
    value: ir.Value,
    nodes: ir.Node | list[ir.Node],
    new_value: ir.Value,
    consumers: Iterable[ir.Node] | None = None,
) -> int:
    """Splice `nodes` (already reading `value`) onto the edge from `value` to some of its consumers.

    Uses of `value` by the chosen consumers (all if None) are rewired to `new_value`; the new nodes are
    placed right after the producer of `value` (or first in the graph for inputs and initializers).
    Graph outputs keep pointing at `value`. Returns the number of rewired uses.
    """
    graph = value.graph if value.graph is not None else _graph_of_consumers(value)
    # a list first: isinstance against ir.Node goes through typing's protocol machinery when it fails
    new_nodes = list(nodes) if isinstance(nodes, list | tuple) else [nodes]
    chosen = None if consumers is None else set(map(id, consumers))
    new_ids = set(map(id, new_nodes))
    uses = [
        (user, index)
        for user, index in value.uses()
        if id(user) not in new_ids and (chosen is None or id(user) in chosen)
    ]
    producer = value.producer()
    if producer is not None:
        graph.insert_after(producer, new_nodes)
    elif len(graph) > 0:
        graph.insert_before(next(iter(graph)), new_nodes)
    else:
        graph.extend(new_nodes)
    for user, index in uses:
        user.replace_input_with(index, new_value)
    return len(uses)


def _graph_of_consumers(value: ir.Value) -> ir.Graph:
    for user, _ in value.uses():
        if user.graph is not None:
            return user.graph
    raise ValueError(f"value '{value.name}' belongs to no graph")


def replace_value(old: ir.Value, new: ir.Value, graph: ir.Graph) -> None:
    """Make every user of `old`, graph outputs included, read `new`; `new` takes over `old`'s name.

    Taking the name keeps tensor names of the float model stable across rewrites, so calibrated
    scales and user exclusions still find them.
    """
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    name = old.name
    if name and not new.is_graph_input() and not new.is_initializer():
        old.name = None
        new.name = name
    if old.shape is not None and new.shape is None:
        new.shape = old.shape
    if old.type is not None and new.type is None:
        new.type = old.type


def bypass_node(node: ir.Node, input_index: int = 0) -> None:
    """Remove a node whose first output equals one of its inputs (Identity, inference Dropout)."""
    graph = node.graph
    assert graph is not None, "node is not in a graph"
    source = node.inputs[input_index]
    assert source is not None
    output = node.outputs[0]
    if output.is_graph_output() and (source.is_graph_input() or source.is_graph_output()):
        # Two graph boundary values cannot be merged; keep an explicit Identity instead.
        if node.op_type != "Identity":
            identity = ir.Node("", "Identity", [source], outputs=[ir.Value(name=None)], name=node.name)
            graph.insert_before(node, identity)
            replace_value(output, identity.outputs[0], graph)
            graph.remove(node, safe=True)
        return
    if output.is_graph_output() and source.is_initializer():
        return
    if output.is_graph_output():
        # The graph output name is the model's interface: give it to the surviving value.
        replace_value(output, source, graph)
    else:
        output.replace_all_uses_with(source)
    graph.remove(node, safe=True)


def eliminate_dead_code(graph: ir.Graph) -> int:
    """Remove nodes that contribute to no graph output, and unused initializers. Returns removed count."""
    dead = dead_nodes(graph)
    if dead:
        _remove_nodes(graph, dead)
    return len(dead) + remove_unused_initializers(graph)


def dead_nodes(graph: ir.Graph) -> list[ir.Node]:
    """Nodes that contribute to no graph output, in graph order."""
    live: set[int] = set()
    stack = [v for v in graph.outputs]
    seen_values: set[int] = set()
    while stack:
        value = stack.pop()
        if id(value) in seen_values:
            continue
        seen_values.add(id(value))
        producer = value.producer()
        if producer is None or id(producer) in live:
            continue
        live.add(id(producer))
        stack.extend(v for v in producer.inputs if v is not None)
        for attr in producer.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                stack.extend(_outer_values_used_by(attr.as_graph()))
    return [node for node in graph if id(node) not in live]


def remove_unused_initializers(graph: ir.Graph) -> int:
    """Drop initializers nothing reads (graph inputs and outputs are kept). Returns how many went."""
    unused = unused_initializers(graph)
    for name in unused:
        graph.initializers.pop(name)
    return len(unused)


def unused_initializers(graph: ir.Graph) -> list[str]:
    """Names of initializers nothing reads that are neither graph inputs nor outputs."""
    return [
        name
        for name, value in graph.initializers.items()
        if not value.uses() and not value.is_graph_output() and not value.is_graph_input()
    ]


def _remove_nodes(graph: ir.Graph, nodes: list[ir.Node]) -> None:
    """Detach `nodes` from their inputs, then remove them together."""
    for node in nodes:
        for index in range(len(node.inputs)):
            node.replace_input_with(index, None)
    graph.remove(nodes)


def _outer_values_used_by(subgraph: ir.Graph) -> list[ir.Value]:
    """Values from enclosing scopes that a subgraph reads."""
    outer: list[ir.Value] = []
    for node in subgraph.all_nodes():
        for value in node.inputs:
            if value is not None and value.graph is not subgraph:
                outer.append(value)
    return outer


def topological_sort(graph: ir.Graph) -> None:
    """Stable topological sort of the graph and its subgraphs (keeps the original order where it can).

    A graph already in topological order is left as it is: onnx-ir's sort would give back the same order
    (it is stable) after rebuilding every predecessor list, a second at 20k nodes.
    """
    if not is_topologically_sorted(graph):
        graph.sort()


def is_topologically_sorted(graph: ir.Graph) -> bool:
    """True when every node comes after the producers of its inputs in `graph` and no node holds a
    subgraph (those are left to a full sort, which orders them too)."""
    placed: set[int] = set()
    for node in graph:
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None and id(producer) not in placed and producer.graph is graph:
                return False
        if node.attributes and any(
            attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
            for attr in node.attributes.values()
        ):
            return False
        placed.add(id(node))
    return True

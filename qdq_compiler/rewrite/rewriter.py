"""RewritePattern and Rewriter: local graph rewrites whose edits are counted, named and announced.

The Rewriter is the one way passes mutate a graph. It owns the graph's naming scope (built once, so no
edit rescans the graph's names), counts statistics, and tells its listeners (the greedy driver's worklist,
for one) about every node it inserts, erases or changes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import onnx_ir as ir
from onnx_ir.convenience import convert_attributes

from qdq_compiler.ir.editing import NameScope, add_constant, dead_nodes, replace_value, unused_initializers
from qdq_compiler.ir.qdq import insert_qdq_pair, set_scale

logger = logging.getLogger("qdqc")


class RewriteListener(Protocol):
    """Told about each edit a Rewriter makes; every method is called while the graph is consistent."""

    def node_inserted(self, node: ir.Node) -> None:
        """`node` was just added to the graph."""

    def node_erased(self, node: ir.Node) -> None:
        """`node` is about to leave the graph (its inputs are still readable)."""

    def node_changed(self, node: ir.Node) -> None:
        """An input, attribute or name of `node` changed."""


class Rewriter:
    """All edits a pattern makes go through here, so `modified`, names and listeners stay honest."""

    def __init__(self, graph: ir.Graph, names: NameScope | None = None):
        self.graph = graph
        self.statistics: Counter[str] = Counter()
        self.match_failures: list[tuple[str, str]] = []
        self.modified = False
        self.names = names if names is not None else NameScope(graph)
        self.listeners: list[RewriteListener] = []
        self.converged = True  # set by apply_patterns_greedily
        self.pattern_name = ""  # the pattern being tried, for match-failure messages

    # -- inserting ---------------------------------------------------------------------------------------

    def insert_before(self, anchor: ir.Node, nodes: ir.Node | Iterable[ir.Node]) -> None:
        """Insert new nodes just before `anchor`."""
        new_nodes = [nodes] if isinstance(nodes, ir.Node) else list(nodes)
        self.graph.insert_before(anchor, new_nodes)
        self._inserted(new_nodes)

    def insert_after(self, anchor: ir.Node, nodes: ir.Node | Iterable[ir.Node]) -> None:
        """Insert new nodes just after `anchor`."""
        new_nodes = [nodes] if isinstance(nodes, ir.Node) else list(nodes)
        self.graph.insert_after(anchor, new_nodes)
        self._inserted(new_nodes)

    def append(self, nodes: ir.Node | Iterable[ir.Node]) -> None:
        """Add new nodes at the end of the graph."""
        new_nodes = [nodes] if isinstance(nodes, ir.Node) else list(nodes)
        self.graph.extend(new_nodes)
        self._inserted(new_nodes)

    def add_constant(self, array: np.ndarray, name: str) -> ir.Value:
        """A new initializer with a unique name derived from `name`."""
        self.modified = True
        return add_constant(self.graph, array, self.names.value(name))

    def add_initializer(self, value: ir.Value) -> None:
        """Register a named constant value (its `const_value` set) as an initializer."""
        self.graph.register_initializer(value)
        self.names.reserve_value(value.name)
        self.modified = True

    def insert_qdq_pair(
        self,
        value: ir.Value,
        scale: np.ndarray,
        consumers: Iterable[ir.Node] | None = None,
        axis: int | None = None,
    ) -> tuple[ir.Node, ir.Node]:
        """QuantizeLinear -> DequantizeLinear on `value` for `consumers` (all if None); see
        `qdq_compiler.ir.qdq.insert_qdq_pair`. Names come from this Rewriter's scope."""
        chosen = None if consumers is None else list(consumers)
        before = {id(user) for user, _ in value.uses()} if self.listeners else set()
        quantize, dequantize = insert_qdq_pair(value, scale, consumers=chosen, axis=axis, names=self.names)
        self._inserted([quantize, dequantize])
        if self.listeners:
            self._changed_all(user for user, _ in dequantize.outputs[0].uses() if id(user) in before)
        return quantize, dequantize

    def set_scale(self, quantize: ir.Node, scale: np.ndarray) -> None:
        """A new scale for a Q node and the DQs reading it; see `qdq_compiler.ir.qdq.set_scale`."""
        set_scale(quantize, scale, names=self.names)
        self.modified = True
        self._changed(quantize)
        self._changed_all(user for user, _ in quantize.outputs[0].uses())

    # -- replacing ---------------------------------------------------------------------------------------

    def replace_op(
        self,
        node: ir.Node,
        op_type: str,
        inputs: Sequence[ir.Value | None],
        attrs: Mapping[str, Any] | None = None,
        domain: str = "",
        num_outputs: int | None = None,
    ) -> ir.Node:
        """Replace `node` by a new `op_type` node with the same name and as many outputs (or `num_outputs`;
        the old outputs beyond them must be unused).

        The new outputs take over the old ones' names, uses (graph outputs included), shapes and types;
        `attrs` maps attribute names to Python values or `ir.Attr`. Returns the new node.
        """
        attributes = convert_attributes(dict(attrs or {}))
        count = len(node.outputs) if num_outputs is None else num_outputs
        new = ir.Node(domain, op_type, list(inputs), attributes, num_outputs=count, name=node.name)
        self.insert_before(node, new)
        for old_output, new_output in zip(node.outputs, new.outputs):
            self.replace_value(old_output, new_output)
        self.erase(node)
        return new

    def replace_value(self, old: ir.Value, new: ir.Value) -> None:
        """Redirect every use of `old` to `new`; `new` takes `old`'s name (graph outputs included)."""
        self.names.scan()  # `new` gives up its name: the scope must have seen it
        users = [user for user, _ in old.uses()]
        replace_value(old, new, self.graph)
        self.modified = True
        self._changed_all(users)

    def replace_all_uses(self, old: ir.Value, new: ir.Value) -> None:
        """Redirect every node reading `old` to read `new` (graph outputs and names are left alone)."""
        users = [user for user, _ in old.uses()]
        old.replace_all_uses_with(new)
        self.modified = True
        self._changed_all(users)

    def set_input(self, node: ir.Node, index: int, value: ir.Value | None) -> None:
        """Point input `index` of `node` at `value`, growing the input list when needed."""
        if index >= len(node.inputs):
            node.resize_inputs(index + 1)
        node.replace_input_with(index, value)
        self.modified = True
        self._changed(node)

    def set_attribute(self, node: ir.Node, attr: ir.Attr) -> None:
        """Add or overwrite an attribute."""
        node.attributes[attr.name] = attr
        self.modified = True
        self._changed(node)

    def set_name(self, node: ir.Node, name: str) -> None:
        """Rename a node (take `name` from `names` so it is unique)."""
        self.names.scan()  # the old name stays taken
        node.name = name
        self.names.reserve_node(name)
        self.modified = True
        self._changed(node)

    # -- erasing -----------------------------------------------------------------------------------------

    def erase(self, node: ir.Node) -> None:
        """Remove a node whose outputs are no longer used."""
        self.names.scan()  # its names stay taken
        for listener in self.listeners:
            listener.node_erased(node)
        self.graph.remove(node, safe=True)  # checks that nothing reads it, then detaches its inputs
        self.modified = True

    def erase_all(self, nodes: Sequence[ir.Node]) -> None:
        """Remove nodes that nothing outside them reads (dead code), together: one pass over the graph."""
        if not nodes:
            return
        self.names.scan()  # their names stay taken
        for node in nodes:
            for listener in self.listeners:
                listener.node_erased(node)
        for node in nodes:
            for index in range(len(node.inputs)):
                node.replace_input_with(index, None)
        self.graph.remove(nodes)
        self.modified = True

    def remove_initializer(self, value: ir.Value) -> None:
        """Drop an initializer nothing reads any more (its name stays reserved)."""
        assert value.name is not None and not value.uses(), "only unused initializers can be removed"
        self.names.scan()
        self.graph.initializers.pop(value.name)
        self.modified = True

    def remove_unused_initializers(self) -> int:
        """Drop initializers nothing reads (graph inputs and outputs are kept). Returns how many went."""
        unused = unused_initializers(self.graph)
        for name in unused:
            self.remove_initializer(self.graph.initializers[name])
        return len(unused)

    def eliminate_dead_code(self) -> int:
        """Erase nodes that contribute to no graph output, then unused initializers. Returns how many went."""
        dead = dead_nodes(self.graph)
        self.erase_all(dead)
        return len(dead) + self.remove_unused_initializers()

    # -- bookkeeping -------------------------------------------------------------------------------------

    def count(self, counter: str, amount: int = 1) -> None:
        """Bump a named statistic (`num-bn-folded`)."""
        self.statistics[counter] += amount

    def notify_match_failure(self, node: ir.Node, reason: str) -> bool:
        """Record (and log at debug) why a pattern did not apply to `node`; returns False so patterns can
        `return` it."""
        where = node.name or node.op_type
        self.match_failures.append((where, reason))
        logger.debug("%s did not apply at %s: %s", self.pattern_name or "pattern", where, reason)
        return False

    def _inserted(self, nodes: list[ir.Node]) -> None:
        self.modified = True
        for node in nodes:
            self.names.reserve_node(node.name)
            for output in node.outputs:
                self.names.reserve_value(output.name)
            for listener in self.listeners:
                listener.node_inserted(node)

    def _changed(self, node: ir.Node) -> None:
        for listener in self.listeners:
            listener.node_changed(node)

    def _changed_all(self, nodes: Iterable[ir.Node]) -> None:
        for node in nodes:
            self._changed(node)


class RewritePattern:
    """Anchored on one op type; `match_and_rewrite` returns True when it changed the graph."""

    anchor_op: str = ""
    anchor_domain: str = ""

    @property
    def name(self) -> str:
        """The pattern's name in debug messages (its class name)."""
        return type(self).__name__

    def matches_anchor(self, node: ir.Node) -> bool:
        """Whether `node` has this pattern's anchor op type and domain. An override must look at the node
        alone (not at its neighbours, which rewrites change): the driver seeds its worklist with it."""
        return node.op_type == self.anchor_op and (
            node.domain == self.anchor_domain or (self.anchor_domain == "" and node.domain == "ai.onnx")
        )

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        """Try to rewrite at `node`; edit only through `rewriter`."""
        raise NotImplementedError


def sole_user(value: ir.Value) -> ir.Node | None:
    """The only consumer of `value`, if it has exactly one use and is not a graph output."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0][0]

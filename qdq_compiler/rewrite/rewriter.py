"""RewritePattern and Rewriter: local graph rewrites whose edits are counted and kept consistent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.editing import NameScope, add_constant, replace_value


class Rewriter:
    """All edits a pattern makes go through here, so `modified` and the counters stay honest."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.statistics: Counter[str] = Counter()
        self.match_failures: list[tuple[str, str]] = []
        self.modified = False
        self.names = NameScope(graph)

    def insert_before(self, anchor: ir.Node, nodes: ir.Node | Iterable[ir.Node]) -> None:
        """Insert new nodes just before `anchor`."""
        self.graph.insert_before(anchor, nodes)
        self.modified = True

    def replace_value(self, old: ir.Value, new: ir.Value) -> None:
        """Redirect every use of `old` to `new`; `new` takes `old`'s name (graph outputs included)."""
        replace_value(old, new, self.graph)
        self.modified = True

    def erase(self, node: ir.Node) -> None:
        """Remove a node whose outputs are no longer used."""
        for index in range(len(node.inputs)):
            node.replace_input_with(index, None)
        self.graph.remove(node, safe=True)
        self.modified = True

    def set_input(self, node: ir.Node, index: int, value: ir.Value | None) -> None:
        """Point input `index` of `node` at `value`, growing the input list when needed."""
        if index >= len(node.inputs):
            node.resize_inputs(index + 1)
        node.replace_input_with(index, value)
        self.modified = True

    def set_attribute(self, node: ir.Node, attr: ir.Attr) -> None:
        """Add or overwrite an attribute."""
        node.attributes[attr.name] = attr
        self.modified = True

    def add_constant(self, array: np.ndarray, name: str) -> ir.Value:
        """A new initializer with a unique name derived from `name`."""
        self.modified = True
        return add_constant(self.graph, array, self.names.value(name))

    def count(self, counter: str, amount: int = 1) -> None:
        """Bump a named statistic (`num-bn-folded`)."""
        self.statistics[counter] += amount

    def notify_match_failure(self, node: ir.Node, reason: str) -> bool:
        """Record why a pattern did not apply to `node`; returns False so patterns can `return` it."""
        self.match_failures.append((node.name or node.op_type, reason))
        return False


class RewritePattern:
    """Anchored on one op type; `match_and_rewrite` returns True when it changed the graph."""

    anchor_op: str = ""
    anchor_domain: str = ""

    def matches_anchor(self, node: ir.Node) -> bool:
        """Whether `node` has this pattern's anchor op type and domain."""
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

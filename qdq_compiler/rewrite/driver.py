"""Greedy worklist driver: apply patterns until no pattern applies anywhere, within a bound.

The worklist starts with every node some pattern is anchored on, in graph order (visiting any other node
would find nothing to do: a pattern's anchor test depends on the node alone). After a pattern rewrites at a
node, only the nodes the rewrite touched (inserted, changed, or next to an erased node) and their producers
and users go back on the worklist, so a pass costs time in proportion to the graph plus the work it does,
not sweeps x nodes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import onnx_ir as ir

from qdq_compiler.ir.editing import NameScope
from qdq_compiler.rewrite.rewriter import RewritePattern, Rewriter

logger = logging.getLogger("qdqc")


class _Worklist:
    """First-in first-out nodes to visit, each at most once in the queue; listens to the Rewriter."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self._queue: deque[ir.Node] = deque()
        self._queued: set[int] = set()
        self._touched: list[ir.Node] = []

    def push(self, node: ir.Node) -> None:
        if id(node) not in self._queued:
            self._queued.add(id(node))
            self._queue.append(node)

    def pop(self) -> ir.Node | None:
        while self._queue:
            node = self._queue.popleft()
            self._queued.discard(id(node))
            if node.graph is self.graph:  # skip nodes erased since they were queued
                return node
        return None

    # RewriteListener
    def node_inserted(self, node: ir.Node) -> None:
        self._touched.append(node)

    def node_changed(self, node: ir.Node) -> None:
        self._touched.append(node)

    def node_erased(self, node: ir.Node) -> None:
        # Its producers may now be dead or newly matchable.
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None:
                self._touched.append(producer)

    def requeue_touched(self) -> None:
        """Queue every node touched by the last rewrite, with its producers and users."""
        touched, self._touched = self._touched, []
        for node in touched:
            if node.graph is not self.graph:
                continue
            self.push(node)
            for value in node.inputs:
                producer = value.producer() if value is not None else None
                if producer is not None and producer.graph is self.graph:
                    self.push(producer)
            for output in node.outputs:
                for user, _ in output.uses():
                    if user.graph is self.graph:
                        self.push(user)


def apply_patterns_greedily(
    graph: ir.Graph,
    patterns: Sequence[RewritePattern],
    max_rewrites: int | None = None,
    rewriter: Rewriter | None = None,
    names: NameScope | None = None,
) -> Rewriter:
    """Try each pattern (in order) on each node with its anchor until none applies.

    Returns the Rewriter: `modified` and `statistics` describe what happened, `converged` is False when
    the patterns were still rewriting after `max_rewrites` rewrites (default 10 per node, at least 100;
    a warning is logged). An exception raised inside a pattern gets the anchor node's name as
    `node_name`, which the pass manager reports. Pass `rewriter` to share one across drivers and edits.
    """
    rewriter = rewriter if rewriter is not None else Rewriter(graph, names)
    limit = max_rewrites if max_rewrites is not None else max(100, 10 * len(graph))
    worklist = _Worklist(graph)
    rewriter.listeners.append(worklist)
    try:
        for seed in graph:
            for pattern in patterns:  # a plain loop: a generator per node costs what the test saves
                if pattern.matches_anchor(seed):
                    worklist.push(seed)
                    break
        rewrites = 0
        rewriter.converged = True
        while (node := worklist.pop()) is not None:
            if _rewrite_once(node, patterns, rewriter):
                rewrites += 1
                if rewrites >= limit:
                    rewriter.converged = False
                    break
                worklist.requeue_touched()
        if not rewriter.converged:
            logger.warning("rewrite patterns did not converge after %d rewrites", rewrites)
    finally:
        rewriter.listeners.remove(worklist)
        rewriter.pattern_name = ""
    return rewriter


def _rewrite_once(node: ir.Node, patterns: Sequence[RewritePattern], rewriter: Rewriter) -> bool:
    """Apply the first pattern that rewrites at `node`; say whether one did."""
    for pattern in patterns:
        if not pattern.matches_anchor(node):
            continue
        rewriter.pattern_name = pattern.name
        try:
            if pattern.match_and_rewrite(node, rewriter):
                return True
        except Exception as error:
            if getattr(error, "node_name", None) is None:
                error.node_name = node.name or f"<unnamed {node.op_type}>"  # type: ignore[attr-defined]
            raise
    return False

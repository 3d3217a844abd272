"""Greedy driver: apply patterns over the graph until nothing changes, within a bound."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnx_ir as ir

from qdq_compiler.rewrite.rewriter import RewritePattern, Rewriter

logger = logging.getLogger("qdqc")


def apply_patterns_greedily(
    graph: ir.Graph, patterns: Sequence[RewritePattern], max_sweeps: int = 10
) -> Rewriter:
    """Sweep the graph in order, trying each pattern on nodes with its anchor, until a fixpoint.

    Returns the Rewriter, whose `modified` and `statistics` describe what happened. Stops after
    `max_sweeps` sweeps with a warning if the patterns keep changing the graph.
    """
    rewriter = Rewriter(graph)
    for _ in range(max_sweeps):
        changed = False
        for node in list(graph):
            if node.graph is not graph:
                continue  # erased earlier in this sweep
            for pattern in patterns:
                if pattern.matches_anchor(node) and pattern.match_and_rewrite(node, rewriter):
                    changed = True
                    break
        if not changed:
            return rewriter
    logger.warning("rewrite patterns did not reach a fixpoint after %d sweeps", max_sweeps)
    return rewriter

"""Pattern rewriting: RewritePattern, Rewriter (the one way to edit a graph), the greedy worklist driver."""

from qdq_compiler.rewrite.driver import apply_patterns_greedily
from qdq_compiler.rewrite.rewriter import RewriteListener, RewritePattern, Rewriter, sole_user

__all__ = ["RewriteListener", "RewritePattern", "Rewriter", "apply_patterns_greedily", "sole_user"]

"""Pattern rewriting: RewritePattern, Rewriter, and the greedy fixpoint driver."""

from qdq_compiler.rewrite.driver import apply_patterns_greedily
from qdq_compiler.rewrite.rewriter import RewritePattern, Rewriter, sole_user

__all__ = ["RewritePattern", "Rewriter", "apply_patterns_greedily", "sole_user"]

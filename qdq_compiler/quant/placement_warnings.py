"""Warnings of place-qdq that a user would otherwise miss: nothing got quantized, or an exclusion that
matches no layer (a typo in `--exclude` / `--exclude-op` silently quantizes the layer the user meant to keep
float)."""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence

import onnx_ir as ir

from qdq_compiler.pm import PassContext
from qdq_compiler.quant.decisions import LayerDecision
from qdq_compiler.quant.notices import first_names, warn_once

WEIGHTED_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def warn_placement(
    decided: Sequence[tuple[ir.Node, LayerDecision]],
    exclude: Sequence[str],
    exclude_ops: Sequence[str],
    ctx: PassContext,
) -> None:
    """Warn when no layer is INT8 (with the reasons) and for every exclusion that matches no layer."""
    nodes = [node for node, _ in decided]
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(node.name or "", pattern) for node in nodes):
            names = [node.name for node in nodes if node.name]
            known = f" (weighted layers: {first_names(names)})" if names else ""
            warn_once(ctx, "--exclude %r matches no weighted layer name%s", pattern, known)
    present = {node.op_type for node in nodes}
    for op_type in exclude_ops:
        if op_type in present:
            continue
        meant = [op for op in WEIGHTED_OP_TYPES if op.lower() == op_type.lower()]
        if op_type in WEIGHTED_OP_TYPES:
            cause = f"the model has no {op_type} layer"
        elif meant:
            cause = f"op types are case-sensitive: did you mean {meant[0]!r}?"
        else:
            cause = f"{op_type} is not a weighted op ({', '.join(WEIGHTED_OP_TYPES)}); other ops stay float"
        warn_once(ctx, "--exclude-op %r matches no layer: %s", op_type, cause)
    if not any(decision.int8 for _, decision in decided):
        warn_once(ctx, "no layer was quantized: %s", _why_all_float([d for _, d in decided]))


def _why_all_float(decisions: Sequence[LayerDecision]) -> str:
    if not decisions:
        ops = ", ".join(WEIGHTED_OP_TYPES)
        return f"the model has no weighted layer ({ops}); the output is the float model"
    reasons = Counter(decision.reason for decision in decisions)
    parts = []
    for reason, count in reasons.most_common():
        names = [d.node_name for d in decisions if d.reason == reason]
        parts.append(f"{count} {reason}: {first_names(names)}")
    return f"all {len(decisions)} weighted layer(s) stay float ({'; '.join(parts)})"

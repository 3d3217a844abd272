"""The compile summary: Q/DQ counts, weighted layers in INT8 vs float (with reasons), time per pass."""

from __future__ import annotations

import onnx_ir as ir

from qdq_compiler.ir import count_qdq
from qdq_compiler.quant.decisions import layer_decisions


def compile_summary(model: ir.Model, pass_times: list[tuple[str, float]]) -> str:
    """A short human-readable report of what compilation produced."""
    q, dq = count_qdq(model.graph)
    decisions = layer_decisions(model)
    int8 = [d for d in decisions.values() if d.int8]
    floats = [d for d in decisions.values() if not d.int8]
    lines = [f"Q/DQ: {q} QuantizeLinear, {dq} DequantizeLinear"]
    if decisions:
        lines.append(f"weighted layers: {len(int8)} INT8, {len(floats)} float")
        for decision in floats:
            lines.append(f"  float  {decision.op_type:<14} {decision.node_name}: {decision.reason}")
    if pass_times:
        lines.append("time per pass:")
        for name, seconds in pass_times:
            lines.append(f"  {seconds * 1000:9.1f} ms  {name}")
    return "\n".join(lines)

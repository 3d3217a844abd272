"""The compile summary: Q/DQ counts, weighted layers in INT8 vs float (with reasons), the numerical
self-check; as text, and as JSON for tools (`qdqc compile --summary-json`)."""

from __future__ import annotations

import json
import os

import onnx_ir as ir

import qdq_compiler
from qdq_compiler.accuracy.selfcheck import SelfCheck, format_selfcheck, selfcheck_to_json
from qdq_compiler.ir import count_qdq
from qdq_compiler.paths import write_atomic
from qdq_compiler.quant.auto_method import AUTO_METADATA_KEY
from qdq_compiler.quant.decisions import layer_decisions

SUMMARY_JSON_FORMAT = "qdqc-compile-summary/1"


def compile_summary(model: ir.Model, check: SelfCheck | None = None) -> str:
    """A short human-readable report of what compilation produced (times: `--timing`'s table)."""
    q, dq = count_qdq(model.graph)
    decisions = layer_decisions(model)
    int8 = [d for d in decisions.values() if d.int8]
    floats = [d for d in decisions.values() if not d.int8]
    lines = [f"Q/DQ: {q} QuantizeLinear, {dq} DequantizeLinear"]
    if decisions:
        lines.append(f"weighted layers: {len(int8)} INT8, {len(floats)} float")
        for decision in floats:
            lines.append(f"  float  {decision.op_type:<14} {decision.node_name}: {decision.reason}")
    if check is not None:
        lines.append(format_selfcheck(check))
    return "\n".join(lines)


def compile_summary_json(
    model: ir.Model, pipeline_text: str, check: SelfCheck | None, source: str, output: str
) -> dict:
    """The summary as JSON-ready data. No times: the same model, data and options give the same bytes."""
    q, dq = count_qdq(model.graph)
    decisions = list(layer_decisions(model).values())
    return {
        "format": SUMMARY_JSON_FORMAT,
        "qdqc_version": qdq_compiler.__version__,
        "input": str(source),
        "output": str(output),
        "pipeline": pipeline_text,
        "qdq": {"QuantizeLinear": q, "DequantizeLinear": dq},
        "weighted_layers": {
            "int8": sum(d.int8 for d in decisions),
            "float": sum(not d.int8 for d in decisions),
            "decisions": [
                {"node": d.node_name, "op": d.op_type, "int8": d.int8, "reason": d.reason or None}
                for d in decisions
            ],
        },
        "self_check": selfcheck_to_json(check) if check is not None else {"status": "off"},
        **_auto_calibration(model),
    }


def _auto_calibration(model: ir.Model) -> dict:
    """``{"calibration_auto": ...}``: what --method auto recorded in the model (per-method scores, the
    method of every tensor), or nothing."""
    recorded = model.metadata_props.get(AUTO_METADATA_KEY)
    return {"calibration_auto": json.loads(recorded)} if recorded else {}


def write_json_atomic(path: str | os.PathLike[str], data: dict) -> None:
    """Write ``data`` as indented JSON with sorted keys, atomically (:func:`paths.write_atomic`)."""
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8"))

"""Accuracy analysis in onnxruntime: how far a compiled model's outputs are from the float model's, and which
layers cost the most when quantized."""

from qdq_compiler.accuracy.numerics import (
    OutputComparison,
    compare_outputs,
    onnxruntime_part,
    run_outputs,
    sqnr_db,
)
from qdq_compiler.accuracy.sensitivity import (
    CumulativeStep,
    LayerSensitivity,
    SensitivityReport,
    analyze_sensitivity,
    best_step,
    exclude_pattern,
    format_sensitivity,
    sensitivity_to_json,
)

__all__ = [
    "CumulativeStep",
    "LayerSensitivity",
    "OutputComparison",
    "SensitivityReport",
    "analyze_sensitivity",
    "best_step",
    "compare_outputs",
    "exclude_pattern",
    "format_sensitivity",
    "onnxruntime_part",
    "run_outputs",
    "sensitivity_to_json",
    "sqnr_db",
]

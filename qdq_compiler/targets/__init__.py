"""TensorRT target support: rule tables, Q/DQ linter, fusion prediction, trtexec/engine builds, layer reports.

Each module returns plain data plus a text formatter; the CLI (`qdqc lint/explain/build/report-engine`)
only wires them. tensorrt itself is imported lazily by engine.build_engine.
"""

from qdq_compiler.targets.fusion import FusionReport, format_report, predict_fusions, report_to_json
from qdq_compiler.targets.layer_report import (
    Comparison,
    LayerReport,
    compare_with_prediction,
    format_comparison,
    format_layer_report,
    read_layer_report,
)
from qdq_compiler.targets.lint import TrtLintError, Violation, format_violations, lint_model
from qdq_compiler.targets.trtexec import format_command, trtexec_command

__all__ = [
    "Comparison",
    "FusionReport",
    "LayerReport",
    "TrtLintError",
    "Violation",
    "compare_with_prediction",
    "format_command",
    "format_comparison",
    "format_layer_report",
    "format_report",
    "format_violations",
    "lint_model",
    "predict_fusions",
    "read_layer_report",
    "report_to_json",
    "trtexec_command",
]

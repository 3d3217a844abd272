"""`qdqc eval`: how far an INT8 model is from its FP32 model on data, per output and by the task's metric."""

from __future__ import annotations

from qdq_compiler.evaluation.report import EvalReport, OutputStats, TaskMetric, format_report, report_to_json
from qdq_compiler.evaluation.run import evaluate_models

__all__ = ["EvalReport", "OutputStats", "TaskMetric", "evaluate_models", "format_report", "report_to_json"]

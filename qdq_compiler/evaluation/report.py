"""What `qdqc eval` measured, printed as a table or written as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OutputStats:
    """How close one INT8 output is to the FP32 one over all samples."""

    name: str
    shape: tuple[int, ...]
    sqnr_db: float
    cosine: float


@dataclass(frozen=True)
class TaskMetric:
    """One task metric three ways: INT8 against FP32's result, and each model against the labels (None:
    no labels given)."""

    name: str
    int8_vs_fp32: float | None
    fp32_vs_labels: float | None = None
    int8_vs_labels: float | None = None


@dataclass(frozen=True)
class EvalReport:
    """Everything `qdqc eval` prints: per-output closeness and the task's metrics."""

    samples: int
    kind: str
    kind_source: str  # "--kind", "metadata" or "output shapes"
    task_output: str
    outputs: list[OutputStats]
    metrics: list[TaskMetric]
    notes: list[str] = field(default_factory=list)

    def metric(self, name: str) -> TaskMetric:
        """The task metric called ``name``."""
        return next(metric for metric in self.metrics if metric.name == name)


def _cell(value: float | None, width: int, digits: int = 4) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if math.isinf(value) or math.isnan(value):
        return f"{value:>{width}}"
    return f"{value:>{width}.{digits}f}"


def format_report(report: EvalReport) -> str:
    """The report as a readable table: one row per output, then one per task metric."""
    name_width = max([len("output"), *(len(stats.name) for stats in report.outputs)])
    lines = [f"{'output':<{name_width}}  {'shape':<18} {'SQNR dB':>8} {'cosine':>9}"]
    for stats in report.outputs:
        shape = "[" + ",".join(map(str, stats.shape)) + "]"
        sqnr, cosine = _cell(stats.sqnr_db, 8, 2), _cell(stats.cosine, 9, 6)
        lines.append(f"{stats.name:<{name_width}}  {shape:<18} {sqnr} {cosine}")
    lines.append("")
    lines.append(
        f"task: {report.kind} (from {report.kind_source}), output {report.task_output!r}, "
        f"{report.samples} samples"
    )
    labelled = any(metric.fp32_vs_labels is not None for metric in report.metrics)
    header = f"{'metric':<14}  {'INT8 vs FP32':>12}"
    if labelled:
        header += f"  {'FP32 vs labels':>14}  {'INT8 vs labels':>14}"
    lines.append(header)
    for metric in report.metrics:
        row = f"{metric.name:<14}  {_cell(metric.int8_vs_fp32, 12)}"
        if labelled:
            row += f"  {_cell(metric.fp32_vs_labels, 14)}  {_cell(metric.int8_vs_labels, 14)}"
        lines.append(row)
    lines.extend(f"  {note}" for note in report.notes)
    return "\n".join(lines)


def _number(value: float | None) -> float | str | None:
    """JSON has no infinities or NaN: they become the strings 'inf', '-inf', 'nan'."""
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def report_to_json(report: EvalReport) -> dict:
    """The report as plain JSON-ready data."""
    return {
        "samples": report.samples,
        "kind": report.kind,
        "kind_source": report.kind_source,
        "task_output": report.task_output,
        "outputs": {
            stats.name: {
                "shape": list(stats.shape),
                "sqnr_db": _number(stats.sqnr_db),
                "cosine": _number(stats.cosine),
            }
            for stats in report.outputs
        },
        "metrics": {
            metric.name: {
                "int8_vs_fp32": _number(metric.int8_vs_fp32),
                "fp32_vs_labels": _number(metric.fp32_vs_labels),
                "int8_vs_labels": _number(metric.int8_vs_labels),
            }
            for metric in report.metrics
        },
        "notes": list(report.notes),
    }

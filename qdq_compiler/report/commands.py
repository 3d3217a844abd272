"""What `qdqc compile`, `sensitivity` and `eval` do for ``--report DIR``: refuse early, write at the end."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import click
import onnx_ir as ir

from qdq_compiler.accuracy.selfcheck import SelfCheck
from qdq_compiler.calib.histogram import TensorStats
from qdq_compiler.paths import check_output_dir
from qdq_compiler.report.write import require_matplotlib, write_report


def check_report_dir(report_dir: str | None) -> None:
    """Before any work: the folder can be written and matplotlib is installed (one line if not)."""
    if report_dir is None:
        return
    check_output_dir(report_dir, "--report")
    require_matplotlib()


def _written(index: Path, quiet: bool, started: float, err: bool = False) -> float:
    """Say where the report went and how big it is (on stderr with ``err``); return the seconds it took."""
    seconds = time.perf_counter() - started
    if not quiet:
        files = [index, *sorted((index.parent / "img").glob("*.png"))]
        size = sum(path.stat().st_size for path in files)
        click.echo(
            f"wrote report {index} ({len(files)} files, {size / 1024:.0f} KiB, {seconds:.1f} s)", err=err
        )
    return seconds


def compile_report(
    report_dir: str,
    model_path: str,
    output: str,
    compiled: ir.Model,
    stats: Mapping[str, TensorStats],
    passes: Sequence,
    check: SelfCheck | None,
    quiet: bool,
    search=None,
) -> float:
    """Write the report of a compile (with the fallback search's curve when one ran); return its seconds."""
    from qdq_compiler.report import collect

    started = time.perf_counter()
    plan = collect.calibration_plan(passes)
    data = collect.compile_report(model_path, output, compiled, stats, plan, check)
    if search is not None and search.steps:
        data.fallback = collect.fallback_from_search(search)
    return _written(write_report(report_dir, data), quiet, started)


def sensitivity_report(
    report_dir: str, model_path: str, manager, pass_ctx, report, quiet: bool, err: bool = False
) -> None:
    """Write sensitivity's report: the all-INT8 model the analysis compiled (``report.model``, statistics
    reused), ranking and fallback curve."""
    from qdq_compiler.report import collect

    started = time.perf_counter()
    if report.model is None:
        raise ValueError("the sensitivity report has no all-INT8 model")  # analyze_sensitivity sets it
    plan = collect.calibration_plan(manager.passes)
    data = collect.sensitivity_report(model_path, report.model, pass_ctx.calibration_stats, plan, report)
    _written(write_report(report_dir, data), quiet, started, err)


def eval_report(
    report_dir: str, fp32_path: str, int8_path: str, int8: ir.Model, report, quiet: bool, err: bool
) -> None:
    """Write eval's report: its tables and the INT8 model's layers, weights and graph pictures."""
    from qdq_compiler.report import collect

    started = time.perf_counter()
    data = collect.eval_report(fp32_path, int8_path, int8, report)
    _written(write_report(report_dir, data), quiet, started, err)

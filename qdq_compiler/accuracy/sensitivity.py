"""Per-layer sensitivity: which quantized layers cost the most accuracy, and what keeping them float buys.

For every weighted layer the compiled model runs in INT8, the model is compiled again with only that layer
kept float (the same pipeline, options and calibration statistics; the layer is added to place-qdq's
``exclude``), run in onnxruntime on the evaluation inputs, and compared with the float model: the SQNR
gained is that layer's sensitivity. Then the most sensitive layers are kept float together, one more at a
time, to show accuracy against the INT8 share of the MACs that fusion prediction expects.

The pipeline runs up to place-qdq once; only place-qdq and what follows it run per variant, and the
statistics collected once serve all others (no model run for calibration again). The variants run on the
evaluation engine (:mod:`qdq_compiler.search`), in this process, a local pool or on Ray.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_ir as ir

from qdq_compiler.accuracy.numerics import OutputComparison
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import Pass, PassContext, PassManager

if TYPE_CHECKING:
    from qdq_compiler.search.engine import EvalSource

__all__ = [
    "CumulativeStep",
    "LayerSensitivity",
    "SensitivityReport",
    "analyze_sensitivity",
    "best_step",
    "exclude_pattern",
    "format_sensitivity",
    "gain",
    "rank_key",
    "sensitivity_to_json",
]

Batch = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class LayerSensitivity:
    """One INT8 layer: the model's SQNR with only this layer float, and the gain over all-INT8."""

    name: str
    op: str
    mac_share: float | None  # this layer's share of all weighted-layer MACs (None: shapes unknown)
    sqnr_db: float
    gain_db: float


@dataclass(frozen=True)
class CumulativeStep:
    """The ``k`` most sensitive layers kept float together."""

    float_layers: tuple[str, ...]
    sqnr_db: float
    int8_mac_share: float


@dataclass(frozen=True)
class SensitivityReport:
    """Everything :func:`analyze_sensitivity` measured."""

    samples: int
    baseline: OutputComparison
    baseline_int8_mac_share: float
    already_float: list[tuple[str, str]]  # (layer, reason) kept float by the pipeline itself
    layers: list[LayerSensitivity]  # most sensitive first
    cumulative: list[CumulativeStep]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (layer, why not measured)
    cut_before: list[str] = dataclasses.field(default_factory=list)  # nodes onnxruntime cannot run
    # the all-INT8 compile the analysis measured (for the report); not part of the results
    model: ir.Model | None = dataclasses.field(default=None, repr=False, compare=False)


def exclude_pattern(name: str) -> str:
    """A place-qdq ``exclude`` pattern (fnmatch) matching exactly the node ``name``: ``*?[`` bracketed."""
    return re.sub(r"([*?\[])", r"[\1]", name)


class VariantCompiler:
    """Compiles the prepared model with extra float layers; the first compile fills the statistics.

    The prepared model (the pipeline up to place-qdq, run once) and the passes from place-qdq on are plain
    data, so a copy can be sent to another process (:mod:`qdq_compiler.search` does) and compile there.
    """

    def __init__(self, float_model: onnx.ModelProto, manager: PassManager, ctx: PassContext) -> None:
        names = [p.name for p in manager.passes]
        if "place-qdq" not in names:
            raise QdqcError("sensitivity needs a pipeline with place-qdq (the default trt-int8 has it)")
        split = names.index("place-qdq")
        prepared = load_model(float_model)
        PassManager(manager.passes[:split]).run(prepared, ctx, stamp=False)
        self.prepared = to_proto(prepared).SerializeToString()
        self.suffix = manager.passes[split:]
        self.ctx = ctx

    @classmethod
    def from_prepared(cls, prepared: bytes, suffix: Sequence[Pass], ctx: PassContext) -> VariantCompiler:
        """A compiler of an already prepared model (:attr:`prepared`, :attr:`suffix` of another one)."""
        compiler = cls.__new__(cls)
        compiler.prepared, compiler.suffix, compiler.ctx = prepared, list(suffix), ctx
        return compiler

    def compile(
        self, float_layers: Sequence[str], method: str | None = None, overrides: Sequence[str] = ()
    ) -> ir.Model:
        """The model with ``float_layers`` kept float; ``method`` / ``overrides`` replace calibrate's."""
        model = load_model(self.prepared)
        passes = [copy.copy(p) for p in self.suffix]
        place = passes[0]
        extra = tuple(exclude_pattern(name) for name in float_layers)
        place.options = dataclasses.replace(place.options, exclude=tuple(place.options.exclude) + extra)
        if method is not None or overrides:
            for index, pass_ in enumerate(passes):
                if pass_.name == "calibrate":
                    changes: dict = {"overrides": tuple(overrides)} if overrides else {}
                    if method is not None:
                        changes["method"] = method
                    passes[index].options = dataclasses.replace(pass_.options, **changes)
        PassManager(passes).run(model, self.ctx, stamp=False)
        return model


def analyze_sensitivity(
    float_model: onnx.ModelProto,
    manager: PassManager,
    ctx: PassContext,
    batches: Sequence[Batch] | EvalSource,
    top: int = 5,
    progress: Callable[[int, int, str], None] | None = None,
    workers: int | None = 1,
    ray: str | None = None,
) -> SensitivityReport:
    """Measure every INT8 layer's sensitivity on ``batches``; keep the ``top`` most sensitive float in turn.

    ``manager`` is the compile pipeline (with its options); ``ctx`` holds the calibration data or cached
    statistics. ``batches``: the evaluation batches, or where each worker reads them
    (:class:`~qdq_compiler.search.EvalSource`). The variants run on the evaluation engine
    (:mod:`qdq_compiler.search.sensitivity`): in this process for one worker, else a pool of ``workers``
    processes, or on Ray (``ray``: an address or ``"local"``). ``progress(done, total, what)`` is called as
    variants are measured.
    """
    from qdq_compiler.search.sensitivity import measure_sensitivity

    return measure_sensitivity(float_model, manager, ctx, batches, top, progress, workers, ray)


def gain(sqnr: float, baseline: float) -> float:
    """SQNR gained over the baseline; 0 when equal (also both inf), nan when either is nan."""
    return 0.0 if sqnr == baseline else sqnr - baseline


def rank_key(item: LayerSensitivity) -> tuple:
    """Largest gain first; a nan gain (the variant's outputs held NaN) last; ties by name."""
    unknown = math.isnan(item.gain_db)
    return (unknown, 0.0 if unknown else -item.gain_db, item.name)


def best_step(report: SensitivityReport) -> CumulativeStep | None:
    """The cumulative step with the highest SQNR (the fewest float layers on ties)."""
    measured = [step for step in report.cumulative if not math.isnan(step.sqnr_db)]
    return max(measured, key=lambda step: (step.sqnr_db, -len(step.float_layers)), default=None)


def _db(value: float) -> str:
    return f"{value:8.2f}" if math.isfinite(value) else f"{value:>8}"


def format_sensitivity(report: SensitivityReport) -> str:
    """The report as text: the all-INT8 baseline, the ranking, the cumulative steps and their flags."""
    outputs = ", ".join(f"{name} {value:.2f}" for name, value in report.baseline.per_output.items())
    lines = [
        f"sensitivity on {report.samples} samples; SQNR in dB against the float model in onnxruntime",
        *(
            [f"outputs compared before {', '.join(report.cut_before)} (onnxruntime cannot run it)"]
            if report.cut_before
            else []
        ),
        f"all INT8: SQNR {report.baseline.sqnr_db:.2f} dB ({outputs}), predicted INT8 MAC share "
        f"{100 * report.baseline_int8_mac_share:.1f}%",
    ]
    for name, reason in report.already_float:
        lines.append(f"  already float: {name} ({reason})")
    for name, reason in report.skipped:
        lines.append(f"  not measured: {name} ({reason})")
    lines.append("layers, most sensitive first (SQNR with only that layer float):")
    width = max([len(item.name) for item in report.layers] + [5])
    lines.append(f"{'rank':>4}  {'layer':<{width}}  {'op':<13} {'MACs %':>6}  {'SQNR':>8}  {'gain':>8}")
    for rank, item in enumerate(report.layers, start=1):
        share = f"{100 * item.mac_share:6.1f}" if item.mac_share is not None else f"{'?':>6}"
        row = f"{rank:>4}  {item.name:<{width}}  {item.op:<13} {share}  {_db(item.sqnr_db)}"
        gain = f"{item.gain_db:+8.2f}" if not math.isnan(item.gain_db) else f"{'nan':>8}"
        lines.append(f"{row}  {gain}")
    if report.cumulative:
        lines.append("the most sensitive layers kept float together:")
        lines.append(f"{'k':>4}  {'SQNR':>8}  {'INT8 MAC share':>14}")
        for step in report.cumulative:
            lines.append(
                f"{len(step.float_layers):>4}  {_db(step.sqnr_db)}  {100 * step.int8_mac_share:13.1f}%"
            )
        best = best_step(report)
        if best is not None:
            kept = best.float_layers
            flags = " ".join(f"--exclude {shlex.quote(exclude_pattern(name))}" for name in kept)
            lines.append(f"best step k={len(kept)} ({best.sqnr_db:.2f} dB): qdqc compile ... {flags}")
    return "\n".join(lines)


def _number(value: float | None) -> float | str | None:
    """JSON has no infinities or NaN: they become the strings 'inf', '-inf', 'nan'."""
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def sensitivity_to_json(report: SensitivityReport) -> dict:
    """The report as plain JSON-ready data."""
    return {
        "samples": report.samples,
        "baseline": {
            "sqnr_db": _number(report.baseline.sqnr_db),
            "sqnr_db_per_output": {k: _number(v) for k, v in report.baseline.per_output.items()},
            "int8_mac_share": report.baseline_int8_mac_share,
        },
        "already_float": [{"layer": name, "reason": reason} for name, reason in report.already_float],
        "layers": [
            {
                "layer": item.name,
                "op": item.op,
                "mac_share": item.mac_share,
                "sqnr_db": _number(item.sqnr_db),
                "gain_db": _number(item.gain_db),
            }
            for item in report.layers
        ],
        "cumulative": [
            {
                "float_layers": list(step.float_layers),
                "sqnr_db": _number(step.sqnr_db),
                "int8_mac_share": step.int8_mac_share,
            }
            for step in report.cumulative
        ],
        "not_measured": [{"layer": name, "reason": reason} for name, reason in report.skipped],
        "compared_before": list(report.cut_before),
    }

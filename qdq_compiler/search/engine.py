"""The evaluation engine: compile and measure many variants of one model, each an independent task.

A *variant* (:class:`Variant`) is the compile pipeline with some layers kept float and, optionally, another
calibration method. Every variant shares one :class:`EvalSetup`, made once by :func:`build_setup`: the model
prepared up to place-qdq, the calibration statistics (one statistics pass, or a calibration cache), the
evaluation batches (or where to read them: :class:`EvalSource`) and the float model's outputs on them (the
float cache). A worker holds one setup and
measures variant after variant (:class:`Evaluator`); an executor (:mod:`qdq_compiler.search.executors`)
spreads a list of variants over workers and returns the measurements in task order.

A variant's outputs are compared with the float cache batch by batch (streamed: SQNR powers and the task
metric accumulate), so a worker never holds more than one batch of one variant's outputs besides the cache.
Everything a measurement depends on is in the setup and the variant, so every executor, whatever its number
of workers, gives the same measurements.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from qdq_compiler.accuracy.numerics import ModelRunner
from qdq_compiler.accuracy.sensitivity import VariantCompiler
from qdq_compiler.calib.histogram import TensorStats
from qdq_compiler.calib.methods import memoized_amax
from qdq_compiler.errors import QdqcError
from qdq_compiler.evaluation.data import open_eval_data
from qdq_compiler.evaluation.kind import task_output
from qdq_compiler.evaluation.metrics import Closeness
from qdq_compiler.evaluation.tasks import make_task
from qdq_compiler.ir import to_proto
from qdq_compiler.pm import Pass, PassContext, PassManager
from qdq_compiler.quant.decisions import layer_decisions
from qdq_compiler.targets import predict_fusions

__all__ = [
    "DEFAULT_METRICS",
    "EvalSetup",
    "EvalSource",
    "Evaluator",
    "Measurement",
    "TaskGoal",
    "Variant",
    "build_setup",
    "overall_sqnr",
]

Batch = Mapping[str, np.ndarray]
# the task metric a goal measures by default, per kind (any metric `qdqc eval` prints)
DEFAULT_METRICS = {"classifier": "top-1", "segmentation": "IoU@0.5", "detector": "mAP@0.5"}


@dataclass(frozen=True)
class Variant:
    """One compile to measure: extra layers kept float, and optionally calibrate's method and overrides."""

    float_layers: tuple[str, ...] = ()
    method: str | None = None  # None: the pipeline's
    overrides: tuple[str, ...] = ()  # replace the pipeline's when given ('PATTERN=METHOD')


@dataclass(frozen=True)
class TaskGoal:
    """Which task metric of `qdqc eval` to measure, and on what: the evaluation data's source (for sample
    names and image sizes), labels (None: INT8 is scored against FP32's result), the task's parameters."""

    kind: str
    metric: str  # a metric name of the task: top-1, IoU@0.5, mAP@0.5, mAP@0.5:0.95
    data: str
    labels: str | None = None
    threshold: float = 0.5
    reference_conf: float = 0.25
    batch_size: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class EvalSource:
    """Evaluation data a worker reads itself, batch by batch (as `qdqc eval --data` reads it), so no process
    holds the inputs of all samples at once."""

    data: str
    batch_size: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class Measurement:
    """What one variant measured against the float cache."""

    variant: Variant
    sqnr_db: float  # over all outputs (each output's noise relative to its own power, averaged)
    per_output: dict[str, float]
    metric: (
        float | None
    )  # the goal's metric (against the labels when given, else against FP32); None: no goal
    int8_mac_share: float  # of Conv/Gemm/MatMul MACs, as fusion prediction expects
    float_layers: tuple[str, ...]  # every weighted layer float in this variant (the pipeline's own too)
    model_sha256: str  # of the compiled model's serialized bytes


@dataclass
class EvalSetup:
    """Everything a worker needs, made once and shared by every variant (plain data: it pickles)."""

    float_model: bytes
    prepared: bytes  # the model after the passes before place-qdq
    suffix: list[Pass]  # place-qdq and the passes after it, with the command's options
    stats: dict[str, TensorStats]  # calibration statistics of every tensor a variant may calibrate
    batches: list[dict[str, np.ndarray]] | EvalSource  # the inputs, or where each worker reads them
    reference: list[dict[str, np.ndarray]]  # the float model's outputs on each batch (the float cache)
    goal: TaskGoal | None = None
    reference_metric: float | None = None  # the goal's metric for FP32 (vs labels, or FP32 against itself)
    samples: int = 0
    notes: list[str] = field(default_factory=list)
    auto_validation: Any = None  # --method auto's end scores (AutoValidation) once chosen: reused, not re-run


def overall_sqnr(per_output: Mapping[str, float]) -> float:
    """SQNR over all outputs as :func:`qdq_compiler.accuracy.numerics.compare_outputs` computes it."""
    noise = [10.0 ** (-value / 10.0) for value in per_output.values()]
    mean = float(np.mean(noise)) if noise else 0.0
    if math.isnan(mean):
        return math.nan
    return -10.0 * math.log10(mean) if mean > 0.0 else math.inf


def _quiet_context(stats: dict[str, TensorStats], auto_validation: Any = None) -> PassContext:
    """A pass context over ready statistics; warnings were given when the setup's first compile ran."""
    logger = logging.getLogger("qdqc.search.worker")
    logger.propagate = False
    logger.setLevel(logging.ERROR)
    return PassContext(calibration_stats=dict(stats), logger=logger, auto_validation=auto_validation)


def _read_batches(source: EvalSource, float_model: onnx.ModelProto) -> Iterator[dict[str, np.ndarray]]:
    for batch in open_eval_data(source.data, float_model, source.batch_size, source.limit).batches():
        yield {name: np.asarray(value) for name, value in batch.items()}


class Evaluator:
    """Compiles and measures variants over one setup (one per worker process)."""

    def __init__(self, setup: EvalSetup) -> None:
        self.setup = setup
        self.float_model = onnx.load_from_string(setup.float_model)
        self.compiler = VariantCompiler.from_prepared(
            setup.prepared, setup.suffix, _quiet_context(setup.stats, setup.auto_validation)
        )
        self.memo: dict = {}
        self.eval_data = None
        goal = setup.goal
        if goal is not None:
            self.eval_data = open_eval_data(goal.data, self.float_model, goal.batch_size, goal.limit)

    def __call__(self, variant: Variant) -> Measurement:
        with memoized_amax(self.memo):
            model = self.compiler.compile(variant.float_layers, variant.method, variant.overrides)
        float_layers = tuple(d.node_name for d in layer_decisions(model).values() if not d.int8)
        share = predict_fusions(model).int8_mac_share
        proto = to_proto(model)
        del model
        digest = hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()
        per_output, metric = self._measure(proto)
        return Measurement(variant, overall_sqnr(per_output), per_output, metric, share, float_layers, digest)

    def _measure(self, proto: onnx.ModelProto) -> tuple[dict[str, float], float | None]:
        """Per-output SQNR and the goal's metric, one batch of outputs at a time."""
        setup, goal = self.setup, self.setup.goal
        runner = ModelRunner(proto)
        closeness = {name: Closeness(name) for name in runner.names}
        task = None
        if goal is not None and self.eval_data is not None:
            task = make_task(goal.kind, self.eval_data, goal.labels, goal.threshold, goal.reference_conf)
        batches = setup.batches
        inputs = _read_batches(batches, self.float_model) if isinstance(batches, EvalSource) else batches
        for batch, reference in zip(inputs, setup.reference, strict=True):
            outputs = runner(batch)
            for name, stats in closeness.items():
                stats.add(reference[name], outputs[name])
            if task is not None and goal is not None:
                name = task_output(goal.kind, reference)
                task.add(reference[name], outputs[name])
            del outputs
        per_output = {name: stats.sqnr_db for name, stats in closeness.items()}
        if task is None or goal is None:
            return per_output, None
        return per_output, _metric_value(task.finish()[0], goal)


def _metric_value(metrics: list, goal: TaskGoal, fp32: bool = False) -> float:
    """The goal's metric of INT8 (or with ``fp32`` of FP32): against the labels when given, else vs FP32."""
    found = [metric for metric in metrics if metric.name == goal.metric]
    if not found:
        names = ", ".join(metric.name for metric in metrics)
        raise QdqcError(f"the {goal.kind} task has no metric {goal.metric!r} (it has {names})")
    metric = found[0]
    value = (metric.fp32_vs_labels if fp32 else metric.int8_vs_labels) if goal.labels else metric.int8_vs_fp32
    return math.nan if value is None else float(value)


def build_setup(
    float_model: onnx.ModelProto,
    manager: PassManager,
    ctx: PassContext,
    batches: Sequence[Batch] | EvalSource,
    goal: TaskGoal | None = None,
) -> tuple[EvalSetup, VariantCompiler]:
    """Prepare the model once, collect the statistics once (the all-INT8 compile calibrates; ``ctx`` may
    hold a cache or a distributed collector) and run the float model once on ``batches`` (a list kept in
    the setup, or an :class:`EvalSource` every worker reads again, batch by batch).

    Returns the setup and the compiler of this process (its context holds the statistics).
    """
    compiler = VariantCompiler(float_model, manager, ctx)
    with memoized_amax():
        compiler.compile(())  # fills ctx.calibration_stats (collected once, or taken from the cache)
    runner = ModelRunner(float_model)
    if isinstance(batches, EvalSource):
        inputs: Iterable[dict[str, np.ndarray]] = _read_batches(batches, float_model)
        plain: list[dict[str, np.ndarray]] | EvalSource = batches
    else:
        plain = [{name: np.asarray(value) for name, value in batch.items()} for batch in batches]
        inputs = plain
    reference, samples = [], 0
    for batch in inputs:
        outputs = runner(batch)
        for name, value in outputs.items():
            if not np.all(np.isfinite(value)):
                raise QdqcError(f"the float model's output {name!r} holds NaN or Inf on these inputs")
        reference.append(outputs)
        samples += int(next(iter(batch.values())).shape[0])
    if not reference:
        raise QdqcError("the search needs at least one evaluation sample")
    setup = EvalSetup(
        float_model.SerializeToString(),
        compiler.prepared,
        list(compiler.suffix),
        dict(ctx.calibration_stats),
        plain,
        reference,
        goal,
        samples=samples,
        auto_validation=ctx.auto_validation,
    )
    if goal is not None:
        setup.reference_metric = _reference_metric(setup, float_model)
    return setup, compiler


def _reference_metric(setup: EvalSetup, float_model: onnx.ModelProto) -> float:
    """FP32's value of the goal's metric: against the labels, or without labels FP32 scored against itself
    (1 for top-1 and IoU; for mAP the score of FP32's detections against its own above --reference-conf)."""
    goal = setup.goal
    assert goal is not None
    data = open_eval_data(goal.data, float_model, goal.batch_size, goal.limit)
    task = make_task(goal.kind, data, goal.labels, goal.threshold, goal.reference_conf)
    for reference in setup.reference:
        name = task_output(goal.kind, reference)
        task.add(reference[name], reference[name])
    metrics = task.finish()[0]
    return _metric_value(metrics, goal, fp32=True) if goal.labels else _metric_value(metrics, goal)

"""``--method auto`` in the calibrate pass: a method per scale group, validated on the model's outputs.

1. Every candidate method's amax of every auto-calibrated tensor, from the one statistics pass.
2. The **per-tensor mix**: each scale group (or lone tensor) takes the candidate with the best local SQNR
   (:mod:`qdq_compiler.calib.auto`), one candidate for all members of a group.
3. **Validation** (``validate=true``): the mix and every candidate used for all auto tensors (the
   "global" variants) are each applied to a copy of the model, their scale groups tied as unify-scales ties
   them (its default options), and run in onnxruntime on the first ``samples`` batches of the evaluation
   data (``PassContext.evaluation_data``, else the calibration data). Each variant's SQNR against the
   float model's outputs (cached once) is its end score; the best variant is kept, a global one on a tie.

The variants are independent tasks (:class:`VariantTask`); :func:`evaluate_variants` runs them with a
plain sequential map, the one place an executor (process pool, Ray) would plug in. A task returns one
number, so no more than one variant's outputs are held at a time.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import onnx
import onnx_ir as ir

from qdq_compiler.calib import MethodPlan, MethodSpec, TensorStats, compute_amax, open_calibration_data
from qdq_compiler.calib.auto import (
    AUTO,
    DEFAULT_CANDIDATES,
    DEFAULT_TOLERANCE_DB,
    LocalChoice,
    check_candidates,
    choose_for_group,
    choose_for_tensor,
)
from qdq_compiler.calib.methods import parse_method_spec
from qdq_compiler.quant.scale_groups import scale_groups

MIX = "per-tensor"
# unify-scales' warnings about a variant's groups would repeat the real run's (or describe a variant not kept)
_SILENT = logging.getLogger("qdqc.auto-variants")
_SILENT.propagate = False
_SILENT.addHandler(
    logging.NullHandler()
)  # the name of the per-tensor (per scale group) mix among the variants
AUTO_METADATA_KEY = "qdq_compiler.calibration_auto"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class AutoOptions:
    """The options of an ``auto{...}`` spec, the candidates parsed."""

    candidates: tuple[MethodSpec, ...]
    tolerance: float = DEFAULT_TOLERANCE_DB
    validate: bool = True
    samples: int = 64
    score: str = "sqnr"  # or "metric": qdqc eval's task metric against FP32 first, SQNR on ties

    @classmethod
    def of(cls, spec: MethodSpec) -> AutoOptions:
        params = spec.kwargs
        texts = tuple(str(text) for text in params.get("candidates", DEFAULT_CANDIDATES))  # type: ignore[union-attr]
        check_candidates(texts)
        return cls(
            candidates=tuple(parse_method_spec(text) for text in texts),
            tolerance=float(params.get("tolerance", DEFAULT_TOLERANCE_DB)),
            validate=bool(params.get("validate", True)),
            samples=int(params.get("samples", 64)),
            score=str(params.get("score", "sqnr")),
        )


@dataclass(frozen=True)
class VariantScore:
    """One variant: its name, the auto tensors that chose it in the mix, its mean local SQNR over the auto
    tensors, and its end SQNR (None when not validated)."""

    name: str
    tensors_in_mix: int
    local_sqnr_db: float
    end_sqnr_db: float | None = None
    end_metric: float | None = None  # the task metric against FP32 (score=metric)


@dataclass
class AutoOutcome:
    """What auto chose: the amax of every calibrated tensor, the variant kept, the mix's method per tensor."""

    amax: dict[str, float]
    chosen: str
    methods: dict[str, str]  # auto tensor -> the method of the kept variant
    mix_methods: dict[str, str]  # auto tensor -> its method in the per-tensor mix
    variants: list[VariantScore] = field(default_factory=list)
    validated: bool = False
    samples: int = 0
    held_out: bool = False  # validated on evaluation data rather than on the calibration data
    metric: str | None = None  # the task metric's name when score=metric

    def counts(self) -> dict[str, int]:
        """Auto tensors per method in the kept result."""
        counted: dict[str, int] = {}
        for method in self.methods.values():
            counted[method] = counted.get(method, 0) + 1
        return dict(sorted(counted.items()))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready record (rounded, so the same inputs give the same bytes)."""
        return {
            "chosen": self.chosen,
            "validated": self.validated,
            "samples": self.samples,
            "validation_data": "evaluation" if self.held_out else "calibration",
            "metric": self.metric,
            "tensors_per_method": self.counts(),
            "variants": [
                {
                    "name": v.name,
                    "tensors_in_mix": v.tensors_in_mix,
                    "local_sqnr_db": _rounded(v.local_sqnr_db),
                    "end_sqnr_db": _rounded(v.end_sqnr_db),
                    "end_metric": _rounded(v.end_metric),
                }
                for v in self.variants
            ],
            "methods": dict(sorted(self.methods.items())),
        }


def _rounded(value: float | None) -> float | str | None:
    if value is None:
        return None
    return round(value, 4) if math.isfinite(value) else str(value)


# --------------------------------------------------------------------------- variant tasks
@dataclass(frozen=True)
class VariantInputs:
    """What every variant evaluation shares: the model with placeholder scales, the batches, the float
    outputs on them."""

    model: onnx.ModelProto
    batches: tuple[Mapping[str, np.ndarray], ...]
    reference: Mapping[str, np.ndarray]
    task: TaskMetricSpec | None = None  # score=metric: how to measure the task metric


@dataclass(frozen=True)
class TaskMetricSpec:
    """The task metric of `qdqc eval` on the validation batches: the model kind and its task output."""

    kind: str
    output: str

    def measure(self, reference: np.ndarray, quantized: np.ndarray) -> tuple[str, float | None]:
        """(metric name, INT8-vs-FP32 value) of the first task metric over all samples at once."""
        from qdq_compiler.evaluation.data import EvalData
        from qdq_compiler.evaluation.tasks import make_task

        # without labels a task reads only the outputs (and the sample names): no data behind the names
        data = EvalData(cast(Any, None), [str(index) for index in range(len(reference))], "validation")
        task = make_task(self.kind, data, None, threshold=0.5, reference_conf=0.25)  # qdqc eval's defaults
        task.add(reference, quantized)
        metrics, _ = task.finish()
        return metrics[0].name, metrics[0].int8_vs_fp32


@dataclass(frozen=True)
class VariantTask:
    """One independent evaluation: apply ``amax`` to the shared model and measure its SQNR."""

    name: str
    amax: Mapping[str, float]
    inputs: VariantInputs


def sequential_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(item) for item in items]``: the executor of the variant tasks (an engine may replace it)."""
    return [fn(item) for item in items]


@dataclass(frozen=True)
class VariantResult:
    """A variant's end scores: SQNR (dB, all outputs) and, with score=metric, the task metric."""

    sqnr_db: float
    metric: float | None = None
    metric_name: str | None = None

    def key(self, by_metric: bool) -> tuple[float, float]:
        """Larger is better: the metric first (score=metric; unmeasured counts lowest), then SQNR."""
        metric = self.metric if self.metric is not None and by_metric else -math.inf
        return (metric, self.sqnr_db)


def evaluate_variants(
    tasks: Sequence[VariantTask],
    run: Callable[[Callable[[VariantTask], VariantResult], Sequence[VariantTask]], list] | None = None,
) -> list[VariantResult]:
    """The end scores of every task, in task order, by ``run`` (default :func:`sequential_map`)."""
    return list((run or sequential_map)(evaluate_variant, tasks))


def evaluate_variant(task: VariantTask) -> VariantResult:
    """SQNR (dB, all outputs, :func:`compare_outputs`) of the shared model with ``task.amax`` applied, and
    the task metric when the inputs name one."""
    from qdq_compiler.accuracy.numerics import compare_outputs, run_outputs

    variant = variant_model(task.inputs.model, task.amax)
    outputs = run_outputs(variant, task.inputs.batches)
    sqnr = compare_outputs(task.inputs.reference, outputs).sqnr_db
    result = VariantResult(sqnr if not math.isnan(sqnr) else -math.inf)
    spec = task.inputs.task
    if spec is None:
        return result
    name, metric = spec.measure(task.inputs.reference[spec.output], outputs[spec.output])
    return VariantResult(result.sqnr_db, metric, name)


def variant_model(model: onnx.ModelProto, amax: Mapping[str, float]) -> onnx.ModelProto:
    """``model`` with every activation Q's scale from ``amax`` and its scale groups tied (unify-scales)."""
    from qdq_compiler.ir import load_model, to_proto
    from qdq_compiler.pm import PassContext
    from qdq_compiler.pm.pipeline import parse_pipeline
    from qdq_compiler.quant.activation_scales import activation_quantizers, apply_amax
    from qdq_compiler.quant.activation_scales import quantized_tensor_name as tensor_name
    from qdq_compiler.rewrite import Rewriter

    copy = load_model(model)
    rewriter = Rewriter(copy.graph)
    for quantize in activation_quantizers(copy.graph):
        apply_amax(quantize, float(amax[tensor_name(quantize)]), rewriter)
    (unify,) = parse_pipeline("unify-scales")  # its default options, as in trt-int8
    unify.run(copy, PassContext(logger=_SILENT))
    return to_proto(copy)


# --------------------------------------------------------------------------- the choice
def auto_tensors(plan: MethodPlan, names: Sequence[str], op_types: Mapping[str, Iterable[str]]) -> list[str]:
    """The tensors ``plan`` calibrates with auto."""
    return [name for name in names if plan.method_for(name, op_types.get(name, ())).name == AUTO]


def lead_auto_spec(
    plan: MethodPlan, names: Sequence[str], op_types: Mapping[str, Iterable[str]]
) -> MethodSpec:
    """The auto spec whose options apply: the plan's default when it is auto, else the first override's."""
    default = parse_method_spec(plan.default)
    if default.name == AUTO:
        return default
    return plan.method_for(names[0], op_types.get(names[0], ()))


def _units(graph: ir.Graph, auto: Sequence[str], calibrated: set[str]) -> list[list[str]]:
    """Scale groups (their calibrated members) that hold an auto tensor, then the other auto tensors alone."""
    units, grouped, wanted = [], set(), set(auto)
    for group in scale_groups(graph):
        members = [value.name for value in group if value.name in calibrated]
        if len(members) > 1 and any(name in wanted for name in members):
            units.append(members)
            grouped.update(members)
    return units + [[name] for name in auto if name not in grouped]


def choose_auto(
    model: ir.Model,
    stats: Mapping[str, TensorStats],
    fixed_amax: Mapping[str, float],
    auto: Sequence[str],
    options: AutoOptions,
    data: Any,
    logger: logging.Logger,
    guard: Callable[[dict[str, float]], object] = lambda amax: None,
    held_out: bool = False,
) -> AutoOutcome:
    """Choose the amax of the ``auto`` tensors (``fixed_amax`` holds every other calibrated tensor's).

    ``data`` (evaluation data when ``held_out``, else calibration data, or None) feeds the validation;
    ``guard`` fixes up an amax dict in place (all-zero tensors) before a variant is built.
    """
    candidates = [str(spec) for spec in options.candidates]
    amax_of = {name: [compute_amax(stats[name], spec) for spec in options.candidates] for name in auto}
    auto_set = set(auto)
    mix_index: dict[str, int] = {}
    local_scores: dict[str, tuple[float, ...]] = {}
    for unit in _units(model.graph, auto, set(fixed_amax) | auto_set):
        members = [name for name in unit if name in auto_set]
        if len(unit) == 1:
            choice = choose_for_tensor(stats[unit[0]], amax_of[unit[0]], options.tolerance)
        else:
            fixed = max((fixed_amax[name] for name in unit if name not in auto_set), default=0.0)
            choice = choose_for_group(
                {name: stats[name] for name in members},
                {name: amax_of[name] for name in members},
                options.tolerance,
                fixed,
            )
        for name in members:
            mix_index[name] = choice.chosen
            local_scores[name] = _own_scores(stats[name], amax_of[name], options.tolerance)
    mix_methods = {name: candidates[mix_index[name]] for name in sorted(auto)}
    variants = {
        text: {**fixed_amax, **{name: amax_of[name][i] for name in auto}} for i, text in enumerate(candidates)
    }
    variants[MIX] = {**fixed_amax, **{name: amax_of[name][mix_index[name]] for name in auto}}
    for amax in variants.values():
        guard(amax)
    scores = [
        VariantScore(
            text,
            sum(1 for method in mix_methods.values() if method == text),
            _mean_db([local_scores[name][i] for name in auto]),
        )
        for i, text in enumerate(candidates)
    ]
    scores.append(VariantScore(MIX, len(auto), _mean_db([local_scores[n][mix_index[n]] for n in auto])))
    outcome = AutoOutcome(
        amax=variants[MIX], chosen=MIX, methods=dict(mix_methods), mix_methods=mix_methods, variants=scores
    )
    if not options.validate:
        return outcome
    batches = _validation_batches(model, data, options.samples, logger)
    if batches is None:
        return outcome
    shared = _shared_inputs(model, batches, options.score == "metric")
    names = list(variants)
    tasks = [VariantTask(name, variants[name], shared) for name in names]
    end = evaluate_variants(tasks)
    by_metric = options.score == "metric"
    # the first of equal scores: a single method before the mix
    best = max(range(len(names)), key=lambda i: (end[i].key(by_metric), -i))
    outcome.variants = [
        VariantScore(score.name, score.tensors_in_mix, score.local_sqnr_db, end[i].sqnr_db, end[i].metric)
        for i, score in enumerate(scores)
    ]
    outcome.validated, outcome.samples, outcome.held_out = True, len(batches), held_out
    outcome.metric = end[0].metric_name
    outcome.chosen = names[best]
    outcome.amax = variants[names[best]]
    if names[best] != MIX:
        outcome.methods = {name: names[best] for name in sorted(auto)}
    return outcome


def _own_scores(stats: TensorStats, amaxes: Sequence[float], tolerance: float) -> tuple[float, ...]:
    choice: LocalChoice = choose_for_tensor(stats, amaxes, tolerance)
    return choice.scores_db


def _mean_db(values: Sequence[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return float(np.mean(finite)) if finite else math.inf


def _validation_batches(
    model: ir.Model, data: Any, samples: int, logger: logging.Logger
) -> tuple[Mapping[str, np.ndarray], ...] | None:
    """The first ``samples`` batches of ``data``, or None (with a warning) when there are none to read."""
    if data is None:
        logger.warning(
            "method auto: no data to validate on (a calibration cache without --calib): keeping the "
            "per-tensor choice unvalidated; pass --calib DATA to compare it with each single method"
        )
        return None
    from qdq_compiler.quant.float_view import float_view

    opened = open_calibration_data(data, float_view(model))
    if not opened.reiterable:
        logger.warning(
            "method auto: the calibration data can be read only once: per-tensor choice unvalidated"
        )
        return None
    batches = []
    for batch in opened:
        batches.append(dict(batch))
        if len(batches) >= samples:
            break
    return tuple(batches)


def _shared_inputs(
    model: ir.Model, batches: tuple[Mapping[str, np.ndarray], ...], with_metric: bool
) -> VariantInputs:
    from qdq_compiler.accuracy.numerics import run_outputs
    from qdq_compiler.evaluation.kind import kind_from_metadata, kind_from_outputs, task_output
    from qdq_compiler.ir import to_proto
    from qdq_compiler.quant.float_view import float_view

    float_model = float_view(model)
    reference = run_outputs(float_model, batches)
    task = None
    if with_metric:
        kind = kind_from_metadata(float_model) or kind_from_outputs(reference)
        task = TaskMetricSpec(kind, task_output(kind, reference))
    return VariantInputs(to_proto(model), batches, reference, task)


# --------------------------------------------------------------------------- report
def format_auto_table(outcome: AutoOutcome) -> str:
    """The per-method table the calibrate pass logs at info level."""
    lines = [
        f"method auto: kept {outcome.chosen!r}"
        + (
            f" (end SQNR on {outcome.samples} batch(es) of the "
            + ("evaluation data)" if outcome.held_out else "calibration data: in-sample, --eval is safer)")
            if outcome.validated
            else " (not validated)"
        ),
        f"  {'variant':<24} {'tensors in mix':>14} {'local SQNR dB':>14} {'end SQNR dB':>12}"
        + (f" {outcome.metric:>12}" if outcome.metric else ""),
    ]
    for variant in outcome.variants:
        end = "-" if variant.end_sqnr_db is None else f"{variant.end_sqnr_db:.2f}"
        mark = "  <- kept" if variant.name == outcome.chosen else ""
        local = f"{variant.local_sqnr_db:.2f}"
        metric = ""
        if outcome.metric:
            metric = " " + ("-" if variant.end_metric is None else f"{variant.end_metric:.4f}").rjust(12)
        lines.append(f"  {variant.name:<24} {variant.tensors_in_mix:>14} {local:>14} {end:>12}{metric}{mark}")
    return "\n".join(lines)


def record_auto(model: ir.Model, outcome: AutoOutcome) -> bool:
    """Record the outcome (JSON) in the model's metadata; True when it changed."""
    text = json.dumps(outcome.to_json(), sort_keys=True, separators=(",", ":"))
    changed = model.metadata_props.get(AUTO_METADATA_KEY) != text
    model.metadata_props[AUTO_METADATA_KEY] = text
    return changed

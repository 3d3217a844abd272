"""``--method auto``'s validation on the evaluation engine: its candidates are variants like any other.

calibrate{method=auto} chooses a method per scale group by a local criterion (the *mix*,
:mod:`qdq_compiler.quant.auto_method`); whether the mix or one candidate for every auto tensor (a *global*
variant) is better is measured here, before the pipeline runs: each is a :class:`Variant` whose calibrate
method (and overrides) name that candidate, or auto without validation for the mix. They are compiled by
the real pipeline from the one statistics pass and measured against the float model's cached outputs, in
this process, in a pool or on Ray. The end scores go into ``PassContext.auto_validation`` (and every later
setup), so the pipeline's calibrate keeps the best without measuring again, and a search or sensitivity
analysis after it reuses the choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx

from qdq_compiler.calib.auto import AUTO
from qdq_compiler.calib.methods import MethodSpec, parse_method_spec, parse_override
from qdq_compiler.errors import QdqcError
from qdq_compiler.evaluation.kind import kind_from_metadata, kind_from_outputs
from qdq_compiler.pm import Pass, PassContext, PassManager
from qdq_compiler.quant.auto_method import (
    MIX,
    UNVALIDATED,
    AutoOptions,
    AutoValidation,
    VariantResult,
)
from qdq_compiler.search.engine import (
    DEFAULT_METRICS,
    Batch,
    EvalSource,
    Measurement,
    TaskGoal,
    Variant,
    build_setup,
)
from qdq_compiler.search.executors import make_executor

__all__ = ["auto_options", "auto_variants", "validate_method_auto"]


def _calibrate(manager: PassManager) -> Pass | None:
    return next((p for p in manager.passes if p.name == "calibrate"), None)


def auto_options(manager: PassManager) -> AutoOptions | None:
    """The options of the pipeline's auto spec (its default method, else its first auto override), or None
    when calibrate uses no auto."""
    calibrate = _calibrate(manager)
    if calibrate is None:
        return None
    specs = [parse_method_spec(calibrate.options.method)]
    specs += [parse_override(text)[1] for text in calibrate.options.overrides]
    found = next((spec for spec in specs if spec.name == AUTO), None)
    return AutoOptions.of(found) if found is not None else None


def _unvalidated(spec: MethodSpec) -> str:
    return str(MethodSpec(AUTO, tuple({**spec.kwargs, "validate": False}.items())))


def _replace_auto(method: str, overrides: Sequence[str], by) -> Variant:
    """The variant whose calibrate has every auto spec (default and overrides) replaced by ``by(spec)``."""
    spec = parse_method_spec(method)
    new_method = by(spec) if spec.name == AUTO else method
    new_overrides = []
    for text in overrides:
        pattern, item = parse_override(text)
        new_overrides.append(f"{pattern}={by(item)}" if item.name == AUTO else text)
    return Variant(method=new_method, overrides=tuple(new_overrides))


def auto_variants(manager: PassManager, options: AutoOptions) -> dict[str, Variant]:
    """auto's variants by name (as calibrate names them): each candidate for every auto tensor, then the
    per-tensor mix."""
    calibrate = _calibrate(manager)
    assert calibrate is not None
    method, overrides = calibrate.options.method, tuple(calibrate.options.overrides)
    variants = {
        str(candidate): _replace_auto(method, overrides, lambda _spec, text=str(candidate): text)
        for candidate in options.candidates
    }
    variants[MIX] = _replace_auto(method, overrides, _unvalidated)
    return variants


def _result(measured: Measurement, metric_name: str | None) -> VariantResult:
    sqnr = -math.inf if math.isnan(measured.sqnr_db) else measured.sqnr_db  # NaN outputs: the worst
    return VariantResult(sqnr, measured.metric, metric_name)


def validate_method_auto(
    float_model: onnx.ModelProto,
    manager: PassManager,
    ctx: PassContext,
    batches: Sequence[Batch] | EvalSource | None,
    held_out: bool = False,
    workers: int | None = 1,
    ray: str | None = None,
) -> AutoValidation | None:
    """Measure auto's variants on the engine and put their scores into ``ctx.auto_validation``.

    ``batches``: the validation samples (a list of batches, or an :class:`EvalSource`, whose first
    ``samples`` samples are read; score=metric needs an EvalSource); None: nothing to validate on (warned,
    the mix is kept). Collects the calibration statistics (one pass, left in ``ctx``) unless cached.
    Returns the scores, or None when the pipeline has no validated auto.
    """
    options = auto_options(manager)
    if options is None or not options.validate:
        return None
    if batches is None:
        ctx.logger.warning(
            "method auto: no data to validate on (a calibration cache without --calib): keeping the "
            "per-tensor choice unvalidated; pass --calib DATA or --eval DATA to compare it with each "
            "single method"
        )
        ctx.auto_validation = UNVALIDATED
        return None
    if isinstance(batches, EvalSource):
        limit = min(options.samples, batches.limit or options.samples)
        source: Sequence[Batch] | EvalSource = EvalSource(batches.data, batches.batch_size, limit)
    else:
        source = list(batches)[: options.samples]
    goal = _metric_goal(float_model, source) if options.score == "metric" else None
    ctx.auto_validation = UNVALIDATED  # the setup's own compile keeps the mix, measuring nothing
    setup, _ = build_setup(float_model, manager, ctx, source, goal)
    variants = auto_variants(manager, options)
    with make_executor(setup, workers, ray) as executor:
        measured = executor.map(list(variants.values()))
    metric_name = goal.metric if goal is not None else None
    scores = {name: _result(m, metric_name) for name, m in zip(variants, measured, strict=True)}
    validation = AutoValidation(scores, setup.samples, held_out)
    ctx.auto_validation = validation
    return validation


def _metric_goal(float_model: onnx.ModelProto, source: Sequence[Batch] | EvalSource) -> TaskGoal:
    """score=metric: `qdqc eval`'s default metric of the model's kind, INT8 against FP32 (no labels)."""
    if not isinstance(source, EvalSource):
        raise QdqcError("method auto{score=metric} validates on data read from a path (--eval or --calib)")
    from qdq_compiler.accuracy.numerics import ModelRunner
    from qdq_compiler.evaluation.data import open_eval_data

    kind = kind_from_metadata(float_model)
    if kind is None:
        first = next(open_eval_data(source.data, float_model, source.batch_size, 1).batches(), None)
        if first is None:
            raise QdqcError(f"{source.data}: no samples to validate method auto on")
        kind = kind_from_outputs(ModelRunner(float_model)(dict(first)))
    return TaskGoal(
        kind, DEFAULT_METRICS[kind], source.data, None, batch_size=source.batch_size, limit=source.limit
    )

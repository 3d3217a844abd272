"""`qdqc compile --target-sqnr DB | --max-metric-drop X`: keep the fewest MACs float that reach the target.

The options are registered on compile by :func:`recovery_options`; :func:`engine_steps` validates
``--method auto`` on the evaluation engine, then :func:`recover_to_target` runs the
fallback search (:mod:`qdq_compiler.search.fallback`) before compile's own run and adds the chosen layers
to place-qdq's ``exclude``, so the written model records them in its pipeline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shlex
import time
from collections.abc import Iterator

import click

from qdq_compiler.accuracy.numerics import ModelRunner
from qdq_compiler.accuracy.sensitivity import VariantCompiler, exclude_pattern
from qdq_compiler.cli_options import _apply
from qdq_compiler.errors import ChecksFailed, QdqcError
from qdq_compiler.evaluation.data import open_eval_data
from qdq_compiler.evaluation.kind import kind_from_metadata, kind_from_outputs
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.search.engine import (
    DEFAULT_METRICS,
    EvalSetup,
    EvalSource,
    Measurement,
    TaskGoal,
    Variant,
    build_setup,
)
from qdq_compiler.search.executors import Executor, default_workers, make_executor, start_ray
from qdq_compiler.search.fallback import FallbackResult, Goal, SearchStep, fallback_units, search_fallback
from qdq_compiler.search.method_auto import auto_options, validate_method_auto

DEFAULT_BUDGET = 200
RECOVERY_FLAGS = ("eval_data", "labels", "eval_limit", "metric", "budget", "workers", "ray")


def recovery_options(fn):
    """The fallback-to-target options of compile, and the engine's (--workers, --ray)."""
    return engine_options(_recovery_options(fn))


def _recovery_options(fn):
    return _apply(
        [
            click.option(
                "--target-sqnr",
                type=float,
                default=None,
                metavar="DB",
                help="Keep the fewest MACs float (FP16 on trt11) for an SQNR against the float model of at "
                "least DB on --eval (docs/recovery.md; default: no search).",
            ),
            click.option(
                "--max-metric-drop",
                type=click.FloatRange(min=0.0),
                default=None,
                metavar="X",
                help="Keep the fewest MACs float for the task metric of `qdqc eval` (--metric) at most X "
                "below FP32's (against --labels when given, else against FP32's result; default: no search).",
            ),
            click.option(
                "--eval",
                "eval_data",
                default=None,
                metavar="DATA",
                help="Held-out samples the fallback target is measured on and --method auto validates its "
                "choice on (default: the --calib data).",
            ),
            click.option(
                "--labels",
                default=None,
                metavar="FILE|DIR",
                help="Ground truth of --eval for --max-metric-drop, as `qdqc eval --labels` takes it "
                "(default: none, INT8 is scored against FP32's result).",
            ),
            click.option(
                "--eval-limit",
                type=click.IntRange(min=1),
                default=None,
                help="Use the first N --eval samples (default: all).",
            ),
            click.option(
                "--metric",
                default=None,
                help="The task metric of --max-metric-drop (default: top-1, IoU@0.5 or mAP@0.5 by kind).",
            ),
            click.option(
                "--budget",
                type=click.IntRange(min=1),
                default=None,
                help=f"At most this many variants measured by the search (default {DEFAULT_BUDGET}).",
            ),
        ],
        fn,
    )


def engine_options(fn):
    """Where the evaluation engine measures variants (fallback search, sensitivity, --method auto)."""
    return _apply(
        [
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                default=None,
                help="Processes measuring variants (default: one per core; 1: in this process).",
            ),
            click.option(
                "--ray",
                is_flag=False,
                flag_value="local",
                default=None,
                metavar="[ADDRESS]",
                help="Measure variants and collect statistics on Ray (--ray: a local instance; "
                "--ray=ADDRESS: a cluster; default: local processes). Needs the ray extra.",
            ),
        ],
        fn,
    )


def _check_flags(opts: dict) -> str | None:
    """The goal asked for ('sqnr', 'metric-drop' or None); misplaced or clashing flags are refused."""
    sqnr, drop = opts.get("target_sqnr"), opts.get("max_metric_drop")
    if sqnr is not None and drop is not None:
        raise QdqcError("--target-sqnr and --max-metric-drop are two targets: give one")
    if sqnr is None and drop is None:
        for flag in RECOVERY_FLAGS:
            if flag in ("eval_data", "workers", "ray") and _method_is_auto(opts):
                continue  # --method auto validates on --eval too, on the engine
            if opts.get(flag) is not None:
                name = "--eval" if flag == "eval_data" else "--" + flag.replace("_", "-")
                raise QdqcError(
                    f"{name} configures the fallback search: give --target-sqnr or --max-metric-drop"
                )
        return None
    if sqnr is not None and not math.isfinite(sqnr):
        raise QdqcError(f"--target-sqnr must be a finite number of dB, not {sqnr}")
    if sqnr is not None and (opts.get("labels") or opts.get("metric")):
        raise QdqcError("--labels and --metric go with --max-metric-drop, not --target-sqnr")
    return "sqnr" if sqnr is not None else "metric-drop"


def _method_is_auto(opts: dict) -> bool:
    """True when compile's --method is auto (with or without options)."""
    method = str(opts.get("method") or "")
    return method == "auto" or method.startswith("auto{")


def engine_steps(
    model_path: str, manager: PassManager, ctx: PassContext, opts: dict, quiet: bool
) -> FallbackResult | None:
    """What compile measures on the evaluation engine before its own run: --method auto's variants (the
    choice kept in ``ctx``), then the fallback search when a target is asked for (its choice added to
    place-qdq). One Ray instance, one statistics pass for both.

    Returns the search (its steps are the fallback curve), or None when no target was asked for.
    """
    kind = _check_flags(opts)
    with engine_runtime(ctx, opts):
        validate_auto(model_path, manager, ctx, opts, opts.get("eval_data"))
        if kind is None:
            return None
        return recover_to_target(model_path, manager, ctx, opts, quiet, kind)


@contextlib.contextmanager
def engine_runtime(ctx: PassContext, opts: dict) -> Iterator[None]:
    """With --ray: Ray started (when not running) and calibration statistics collected by its workers;
    stopped and reset at the end."""
    address = opts.get("ray")
    started = False
    try:
        if address is not None:
            started = _use_ray_for_statistics(ctx, address, opts.get("workers"))
        yield
    finally:
        ctx.statistics_collector = None
        if started:
            import ray

            ray.shutdown()


def validate_auto(
    model_path: str, manager: PassManager, ctx: PassContext, opts: dict, eval_data: str | None
) -> None:
    """--method auto: measure its variants on ``eval_data`` (else the --calib data; held out or not) with
    the command's --workers / --ray, once; calibrate keeps the best (``ctx.auto_validation``)."""
    if auto_options(manager) is None:
        return
    source = eval_data or opts.get("calib")
    batches = None
    if source is not None:
        limit = None if eval_data else opts.get("calib_limit")
        batches = EvalSource(source, opts.get("batch_size"), limit)
    float_proto = to_proto(load_model(model_path))
    validate_method_auto(
        float_proto, manager, ctx, batches, eval_data is not None, opts.get("workers"), opts.get("ray")
    )


def recover_to_target(
    model_path: str, manager: PassManager, ctx: PassContext, opts: dict, quiet: bool, kind: str
) -> FallbackResult:
    """Run the fallback search to the target ``kind`` (sqnr or metric-drop), and add its choice to place-qdq;
    returns the search (its steps are the fallback curve)."""
    names = [p.name for p in manager.passes]
    if "place-qdq" not in names:
        raise QdqcError("--target-sqnr / --max-metric-drop need a pipeline with place-qdq (trt-int8 has it)")
    source = opts.get("eval_data") or opts.get("calib")
    if source is None:
        raise QdqcError("the fallback search needs samples to measure on: --eval DATA (or --calib DATA)")
    started = time.perf_counter()
    float_proto = to_proto(load_model(model_path))
    samples = open_eval_data(
        source, float_proto, batch_size=opts.get("batch_size"), limit=opts.get("eval_limit")
    )
    first = next(samples.batches(), None)  # the kind, and empty data reported before any work
    if first is None:
        raise QdqcError(f"--eval {source}: no samples")
    batches = EvalSource(source, opts.get("batch_size"), opts.get("eval_limit"))  # each worker reads them
    goal_task = None
    if kind == "metric-drop":
        model_kind = kind_from_metadata(float_proto) or kind_from_outputs(ModelRunner(float_proto)(first))
        goal_task = TaskGoal(
            model_kind,
            opts.get("metric") or DEFAULT_METRICS[model_kind],
            source,
            opts.get("labels"),
            batch_size=opts.get("batch_size"),
            limit=opts.get("eval_limit"),
        )
    setup, compiler = build_setup(float_proto, manager, ctx, batches, goal_task)
    goal = _goal(kind, opts, setup.reference_metric, goal_task)
    echo = (lambda text: None) if quiet else click.echo
    echo(f"fallback search: {goal.describe()} on {setup.samples} samples")
    with make_executor(setup, opts.get("workers"), opts.get("ray")) as executor:
        result = _search(setup, compiler, goal, executor, opts.get("budget") or DEFAULT_BUDGET, echo)
    flags = " ".join(f"--exclude {shlex.quote(pattern)}" for pattern in _patterns(result.chosen))
    seconds = time.perf_counter() - started
    if not result.reached:
        best = _value_text(goal, result.final)
        spent = " (budget spent)" if result.budget_spent else ""
        raise ChecksFailed(
            f"target not reached: {goal.describe()}; the best of {result.evaluations} variants measured "
            f"gives {best} with {len(result.chosen)} layer(s) float{spent}"
        )
    place = manager.passes[names.index("place-qdq")]
    place.options = dataclasses.replace(
        place.options, exclude=tuple(place.options.exclude) + tuple(_patterns(result.chosen))
    )
    echo(
        f"fallback: {len(result.chosen)} layer(s) float, {_value_text(goal, result.final)}, INT8 MAC share "
        f"{100 * result.final.int8_mac_share:.1f}% ({result.evaluations} variants, {executor.name} x"
        f"{executor.workers}, {seconds:.1f} s)"
    )
    echo(f"  flags: {flags or '(none: all INT8 reaches the target)'}")
    echo(f"  pipeline: {manager.pipeline_text}")
    return result


def _goal(kind: str, opts: dict, reference: float | None, task: TaskGoal | None) -> Goal:
    if kind == "sqnr":
        return Goal("sqnr", float(opts["target_sqnr"]))
    assert task is not None, "a metric-drop goal has a task"
    if reference is None or math.isnan(reference):
        raise QdqcError(f"FP32's {task.metric} on --eval is undefined: --max-metric-drop has no reference")
    return Goal("metric-drop", float(opts["max_metric_drop"]), reference, task.metric)


def _patterns(layers: tuple[str, ...]) -> list[str]:
    return [exclude_pattern(name) for name in layers]


def _value_text(goal: Goal, measured: Measurement) -> str:
    if goal.kind == "sqnr":
        return f"SQNR {measured.sqnr_db:.2f} dB"
    metric = "nan" if measured.metric is None else f"{measured.metric:.4f}"
    drop = (goal.reference or 0.0) - goal.score(measured)
    return f"{goal.metric_name} {metric} (drop {drop:.4f})"


def _search(
    setup: EvalSetup, compiler: VariantCompiler, goal: Goal, executor: Executor, budget: int, echo
) -> FallbackResult:
    baseline = executor.map([Variant()])[0]
    units = fallback_units(compiler.compile(()))

    def show(step: SearchStep) -> None:
        value = (
            f"SQNR {step.sqnr_db:7.2f} dB"
            if goal.kind == "sqnr"
            else f"{goal.metric_name} {step.metric if step.metric is not None else math.nan:.4f}"
        )
        groups = sum(len(unit.layers) > 1 for unit in units)
        rank = f"\n  rank     {len(units) - groups} layers and {groups} scale groups, each alone float"
        mark = ("  reached" if step.reached else "") + (
            rank if step.phase == "baseline" and not step.reached else ""
        )
        what = step.unit or "all INT8"
        echo(
            f"  {step.phase:<8} {what:<40} {len(step.float_layers):>3} float  {value}  "
            f"INT8 MACs {100 * step.int8_mac_share:5.1f}%{mark}"
        )

    return search_fallback(setup, units, goal, executor.map, baseline, budget=budget, on_step=show)


def _use_ray_for_statistics(ctx: PassContext, address: str, workers: int | None) -> bool:
    """Calibration statistics (when not from a cache) collected by Ray workers and merged; True when Ray
    was started here."""
    from qdq_compiler.search.distributed import ray_shard_runner, sharded_collector

    started = start_ray(address, workers)
    import ray

    count = max(1, min(workers or default_workers(), int(ray.cluster_resources().get("CPU", 1))))
    ctx.statistics_collector = sharded_collector(lambda model: ray_shard_runner(model, count))
    return started

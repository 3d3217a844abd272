"""`qdqc sensitivity` on the evaluation engine: every single-layer and cumulative variant is a task.

The all-INT8 model, each INT8 layer alone kept float and the ``top`` most sensitive kept float together
are :class:`Variant` s over one :class:`EvalSetup` (one statistics pass, the float outputs cached), measured
in this process, in a pool or on Ray; the report (:class:`SensitivityReport`) is the same whatever runs
them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import onnx

from qdq_compiler.accuracy.numerics import OutputComparison, onnxruntime_part
from qdq_compiler.accuracy.sensitivity import (
    CumulativeStep,
    LayerSensitivity,
    SensitivityReport,
    gain,
    rank_key,
)
from qdq_compiler.calib.methods import memoized_amax
from qdq_compiler.errors import QdqcError
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.quant.decisions import layer_decisions
from qdq_compiler.search.engine import Batch, EvalSource, Measurement, Variant, build_setup
from qdq_compiler.search.executors import Executor, make_executor
from qdq_compiler.targets import predict_fusions

__all__ = ["measure_sensitivity"]

Progress = Callable[[int, int, str], None]


def measure_sensitivity(
    float_model: onnx.ModelProto,
    manager: PassManager,
    ctx: PassContext,
    batches: Sequence[Batch] | EvalSource,
    top: int = 5,
    progress: Progress | None = None,
    workers: int | None = 1,
    ray: str | None = None,
) -> SensitivityReport:
    """Every INT8 layer's sensitivity on ``batches`` (see :func:`qdq_compiler.accuracy.analyze_sensitivity`),
    measured by ``workers`` local processes or on Ray (``ray``: an address or ``"local"``)."""
    if not isinstance(batches, EvalSource) and not batches:
        raise QdqcError("sensitivity needs at least one evaluation sample")
    setup, compiler = build_setup(float_model, manager, ctx, batches)
    with memoized_amax():
        base = compiler.compile(())  # the all-INT8 model: its layers, MACs, and the report's model
    fusion = predict_fusions(base)
    macs = {layer.name: layer.macs for layer in fusion.layers}
    decisions = layer_decisions(base)
    candidates = [d for d in decisions.values() if d.int8]
    already_float = [(d.node_name, d.reason) for d in decisions.values() if not d.int8]
    if not candidates:
        raise QdqcError("no INT8 layers to rank: the compiled model quantizes no weighted layer")
    name_counts = Counter(node.name for node in base.graph)
    unique = [d for d in candidates if d.node_name and name_counts[d.node_name] == 1]
    skipped = [
        (d.node_name, "no unique node name to exclude it by")
        for d in candidates
        if not d.node_name or name_counts[d.node_name] != 1
    ]
    total = len(candidates) + min(top, len(candidates))
    with make_executor(setup, workers, ray) as executor:
        baseline = executor.map([Variant()])[0]
        position = {d.node_name: index for index, d in enumerate(candidates, start=1)}
        singles = _map(
            executor,
            [Variant((d.node_name,)) for d in unique],
            lambda variant: (position[variant.float_layers[0]], total, variant.float_layers[0]),
            progress,
        )
        if progress is not None and skipped:
            progress(len(candidates), total, skipped[-1][0])
        layers = []
        for decision, measured in zip(unique, singles, strict=True):
            if decision.node_name not in measured.float_layers:
                skipped.append((decision.node_name, "still INT8 when excluded"))
                continue
            share = macs.get(decision.node_name)
            layers.append(
                LayerSensitivity(
                    decision.node_name,
                    decision.op_type,
                    share / fusion.total_macs if share is not None and fusion.total_macs else None,
                    measured.sqnr_db,
                    gain(measured.sqnr_db, baseline.sqnr_db),
                )
            )
        layers.sort(key=rank_key)
        steps = [
            Variant(tuple(item.name for item in layers[:count]))
            for count in range(1, min(top, len(layers)) + 1)
        ]
        done = len(candidates)
        measured_steps = _map(
            executor,
            steps,
            lambda variant: (
                done + len(variant.float_layers),
                done + len(steps),
                f"{len(variant.float_layers)} layer(s) float",
            ),
            progress,
        )
    cumulative = [
        CumulativeStep(step.float_layers, measured.sqnr_db, measured.int8_mac_share)
        for step, measured in zip(steps, measured_steps, strict=True)
    ]
    return SensitivityReport(
        setup.samples,
        OutputComparison(baseline.sqnr_db, dict(baseline.per_output)),
        fusion.int8_mac_share,
        already_float,
        layers,
        cumulative,
        sorted(skipped, key=lambda item: position.get(item[0], 0)),
        onnxruntime_part(float_model)[1],
        model=base,
    )


def _map(
    executor: Executor,
    variants: list[Variant],
    where: Callable[[Variant], tuple[int, int, str]],
    progress: Progress | None,
) -> list[Measurement]:
    """The measurements in order, a few variants per :meth:`Executor.map` so progress moves (two per
    worker, so no worker waits for a slow one more than once per chunk)."""
    if progress is None or not variants:
        return executor.map(variants)
    chunk = 1 if executor.workers <= 1 else 2 * executor.workers
    results: list[Measurement] = []
    for start in range(0, len(variants), chunk):
        part = variants[start : start + chunk]
        results += executor.map(part)
        progress(*where(part[-1]))
    return results

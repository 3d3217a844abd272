"""Run the float model with onnxruntime on calibration batches and stream chosen tensors into TensorStats.

By default the data are read once, into histograms whose range grows with the data (``"grow"`` binning, see
:mod:`qdq_compiler.calib.histogram`): one model run per batch. ``exact=True`` reads them twice: the first
pass finds every tensor's absmax, the second bins |x| into exactly ``num_bins`` bins over ``[0, absmax]``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from qdq_compiler.ir.external import copy_without_initializers, inference_session, proto_is_large
from qdq_compiler.ir.op_facts import describe_node_proto

from .data import model_input_specs
from .errors import CalibrationDataError, CalibrationError
from .histogram import DEFAULT_NUM_BINS, TensorStats, check_same_pass
from .progress import Progress
from .subgraph import ONNXRUNTIME_DOMAINS, cut_to
from .workers import run_pass

__all__ = [
    "GRAPH_OPTIMIZATION_LEVEL",
    "MAX_WORKERS",
    "accumulate_statistics",
    "collect_statistics",
    "cpu_count",
    "is_reiterable",
]

# onnxruntime graph optimisation for calibration runs. The observed tensors are graph outputs, so no fusion
# can swallow them. EXTENDED keeps the values bit for bit equal to an unoptimised session on CNNs
# (tests/test_calib_collect.py); ALL is not used because its NCHWc layout rewrite changes Conv results in the
# last bits (up to 1e-4 absolute on YOLOv7-tiny), so the statistics would no longer be the float model's.
# Nor does it pay: measured on YOLOv7-tiny at 640 with two workers, ALL's model run alone is ~11% faster, but
# calibration end to end was not (145 vs 141 ms per sample) and peak RSS grew from 486 to 710 MB.
GRAPH_OPTIMIZATION_LEVEL = "ORT_ENABLE_EXTENDED"
# Each run uses one onnxruntime thread: onnxruntime's Conv results change in the last bits with its thread
# count, so statistics taken with a thread per core would differ between machines. Cores are used by running
# up to MAX_WORKERS batches at once instead (each holds its observed tensors while it is binned).
MAX_WORKERS = 8


def cpu_count() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _check_tensor_names(model: onnx.ModelProto, names: Sequence[str], inputs: set[str]) -> None:
    produced = {out for node in model.graph.node for out in node.output if out}
    initializers = {init.name for init in model.graph.initializer}
    for name in names:
        if name in inputs or name in produced:
            continue
        if name in initializers:
            raise ValueError(f"tensor {name!r} is an initializer; calibrate weights with calib.weights")
        raise ValueError(f"tensor {name!r} is not produced in the model's main graph")


@contextlib.contextmanager
def _session(model: onnx.ModelProto, fetch: Sequence[str]) -> Iterator[Any]:
    """An onnxruntime CPU session over a copy of ``model`` cut down to computing ``fetch``; one thread a run.

    Nodes that feed none of ``fetch`` are left out, so a TensorRT plugin after the last observed tensor
    (YOLOv7's ``--end2end`` EfficientNMS_TRT, say) does not stop onnxruntime from calibrating the rest.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVEL)
    options.log_severity_level = 3
    if proto_is_large(model):  # cut a copy without weights; the session reads them from ``model``
        work = copy_without_initializers(model)
        _keep_only(work.graph, fetch)
        session = inference_session(work, options, initializers=model.graph.initializer)
    else:
        work = onnx.ModelProto()
        work.CopyFrom(model)
        _keep_only(work.graph, fetch)
        session = inference_session(work, options)
    del work
    outputs = {out.name for out in session.get_outputs()}
    lost = [name for name in fetch if name not in outputs]
    if lost:
        raise RuntimeError(f"onnxruntime does not expose tensor(s) {', '.join(map(repr, lost))}")
    yield session


def _keep_only(graph: onnx.GraphProto, fetch: Sequence[str]) -> None:
    """Make ``fetch`` the graph's outputs and drop the nodes none of them depends on (in place)."""
    dropped = cut_to(graph, fetch)
    for node in graph.node:
        if node.domain not in ONNXRUNTIME_DOMAINS:
            raise CalibrationError(
                f"calibration needs {describe_node_proto(node)} (domain {node.domain!r}), "
                "which onnxruntime cannot run: keep the layers after it float (--exclude)"
            )
    # a kept tensor a dropped node read stays an output: with one consumer fewer, onnxruntime could fuse
    # differently and change the observed values in their last bits
    produced = {name for node in graph.node for name in node.output if name}
    fetched = set(fetch)
    read_by_dropped = [
        name for node in dropped for name in node.input if name in produced and name not in fetched
    ]
    graph.output.extend(onnx.ValueInfoProto(name=name) for name in dict.fromkeys(read_by_dropped))


def is_reiterable(batches: Iterable[Any]) -> bool:
    """True if iterating ``batches`` again starts over (a list, a tuple, a file or array reader...)."""
    if iter(batches) is batches:  # an iterator or generator
        return False
    return bool(getattr(batches, "reiterable", True))


def collect_statistics(
    model: onnx.ModelProto,
    tensor_names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray] | np.ndarray],
    num_bins: int = DEFAULT_NUM_BINS,
    progress: Progress | bool | None = None,
    exact: bool = False,
    workers: int | None = None,
) -> dict[str, TensorStats]:
    """Stream ``tensor_names`` of ``model`` over ``batches`` into one :class:`TensorStats` each.

    ``model`` is not modified (a copy gets the extra outputs). Tensors may be model inputs or outputs of
    main-graph nodes. Each batch is validated against the model inputs, run, accumulated and dropped, so
    memory does not grow with the data.

    ``exact``: False (default) reads ``batches`` once into growing histograms; True reads them twice
    (absmax, then ``num_bins`` bins over ``[0, absmax]``; ``batches`` must be re-iterable
    (:func:`is_reiterable`: lists, tuples, the file and array readers) and give the same values both times,
    else :class:`CalibrationDataError`).

    ``progress``: True draws a bar on stderr (when it is a terminal); a :class:`Progress` you pass is updated
    (by both passes) but not closed.

    ``workers``: batches run and binned at once, each by one thread (default: one per core, at most
    ``MAX_WORKERS``). The statistics do not depend on it, nor on the machine's core count.
    """
    names = list(dict.fromkeys(tensor_names))
    if not names:
        raise ValueError("no tensors to calibrate")
    specs = model_input_specs(model)
    inputs = {spec.name for spec in specs}
    _check_tensor_names(model, names, inputs)
    fetch = [name for name in names if name not in inputs]
    workers = min(cpu_count(), MAX_WORKERS) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if exact and not is_reiterable(batches):
        raise ValueError("exact calibration reads the data twice; got a one-shot iterable (use exact=False)")

    owned = progress is True
    total = getattr(batches, "num_samples", None)
    if owned and total is not None and exact:
        total *= 2
    bar = Progress(total=total) if progress is True else progress or None
    try:
        with _session(model, fetch) if fetch else contextlib.nullcontext() as session:
            if not exact:
                stats = {name: TensorStats(num_bins, name=name) for name in names}
                if run_pass(session, batches, specs, fetch, stats, bar, workers) == 0:
                    raise CalibrationDataError("calibration data produced no batches (count 0)")
                return stats
            first = {name: TensorStats(num_bins, name=name, histogram=False) for name in names}
            count = run_pass(session, batches, specs, fetch, first, bar, workers)
            if count == 0:
                raise CalibrationDataError("calibration data produced no batches (count 0)")
            stats = {}
            for name, item in first.items():
                stats[name] = TensorStats(num_bins, name=name, fixed_range=item.absmax)
                stats[name]._warned = item._warned  # the NaN/Inf warning was given in the first pass
            try:
                again = run_pass(session, batches, specs, fetch, stats, bar, workers)
                if again != count:
                    raise ValueError(f"the data gave {count} batches, then {again}")
                for name in names:
                    check_same_pass(first[name], stats[name])
            except ValueError as exc:
                raise CalibrationDataError(
                    f"exact calibration reads the data twice and the second pass differs: {exc}"
                ) from None
            return stats
    finally:
        if owned and bar is not None:
            bar.close()


def accumulate_statistics(
    model: onnx.ModelProto,
    stats: Mapping[str, TensorStats],
    batches: Iterable[Mapping[str, np.ndarray] | np.ndarray],
    workers: int = 1,
) -> int:
    """Stream ``batches`` of ``model`` into the existing ``stats`` (keyed by tensor name); the batch count.

    For statistics made elsewhere first: a worker binning its shard of the data into histograms whose range
    the first batch fixed (:meth:`TensorStats.empty_like`), to be merged later (:mod:`qdq_compiler.search`).
    """
    specs = model_input_specs(model)
    inputs = {spec.name for spec in specs}
    _check_tensor_names(model, list(stats), inputs)
    fetch = [name for name in stats if name not in inputs]
    with _session(model, fetch) if fetch else contextlib.nullcontext() as session:
        return run_pass(session, batches, specs, fetch, stats, None, workers)

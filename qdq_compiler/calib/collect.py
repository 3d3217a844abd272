"""Run the float model with onnxruntime on calibration batches and stream chosen tensors into TensorStats."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from .data import model_input_specs, validate_batch
from .errors import CalibrationDataError
from .histogram import DEFAULT_NUM_BINS, TensorStats
from .progress import Progress

__all__ = ["collect_statistics", "cpu_count"]

_PROTO_LIMIT = 2_000_000_000  # protobuf cannot serialize 2 GiB; bigger models go through a file


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
    """An onnxruntime CPU session over a copy of ``model`` that also outputs ``fetch``."""
    import onnxruntime as ort

    work = onnx.ModelProto()
    work.CopyFrom(model)
    present = {out.name for out in work.graph.output}
    for name in fetch:
        if name not in present:
            work.graph.output.append(onnx.ValueInfoProto(name=name))  # onnxruntime infers the type
    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_count()
    # No graph optimisation: fusions must not swallow the tensors we observe, and the values must be the
    # float model's own.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    with tempfile.TemporaryDirectory(prefix="qdqc-calib-") as tmp:
        if work.ByteSize() < _PROTO_LIMIT:
            session = ort.InferenceSession(work.SerializeToString(), options, providers=providers)
        else:
            path = os.path.join(tmp, "model.onnx")
            onnx.save_model(work, path, save_as_external_data=True, location="model.data")
            del work
            session = ort.InferenceSession(path, options, providers=providers)
        outputs = {out.name for out in session.get_outputs()}
        lost = [name for name in fetch if name not in outputs]
        if lost:
            raise RuntimeError(f"onnxruntime does not expose tensor(s) {', '.join(map(repr, lost))}")
        yield session


def _batch_samples(feed: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def collect_statistics(
    model: onnx.ModelProto,
    tensor_names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray] | np.ndarray],
    num_bins: int = DEFAULT_NUM_BINS,
    progress: Progress | bool | None = None,
) -> dict[str, TensorStats]:
    """Stream ``tensor_names`` of ``model`` over ``batches`` into one :class:`TensorStats` each.

    ``model`` is not modified (a copy gets the extra outputs). Tensors may be model inputs or outputs of
    main-graph nodes. Each batch is validated against the model inputs, run, accumulated and dropped, so
    memory does not grow with the data. ``progress``: True draws a bar on stderr (when it is a terminal);
    a :class:`Progress` you pass is updated but not closed.
    """
    names = list(dict.fromkeys(tensor_names))
    if not names:
        raise ValueError("no tensors to calibrate")
    specs = model_input_specs(model)
    inputs = {spec.name for spec in specs}
    _check_tensor_names(model, names, inputs)
    fetch = [name for name in names if name not in inputs]
    stats = {name: TensorStats(num_bins, name=name) for name in names}

    owned = progress is True
    bar = Progress(total=getattr(batches, "num_samples", None)) if owned else progress or None
    seen = 0
    try:
        with _session(model, fetch) if fetch else contextlib.nullcontext() as session:
            for index, batch in enumerate(batches):
                feed = validate_batch(batch, specs, f"calibration batch {index}")
                values = dict(zip(fetch, session.run(fetch, feed), strict=True)) if fetch else {}
                for name in names:
                    value = feed[name] if name in inputs else values[name]
                    if index == 0 and not np.issubdtype(value.dtype, np.floating):
                        raise ValueError(f"tensor {name!r} is {value.dtype}: only float tensors calibrate")
                    stats[name].update(value)
                samples = _batch_samples(feed)
                del values, feed
                seen += 1
                if bar is not None:
                    bar.update(samples)
    finally:
        if owned and bar is not None:
            bar.close()
    if seen == 0:
        raise CalibrationDataError("calibration data produced no batches (count 0)")
    return stats

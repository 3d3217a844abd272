"""Per-channel means of intermediate tensors over calibration data (what bias correction compares)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from qdq_compiler.ir.external import inference_session

from .subgraph import cut_to


def intermediate_outputs(
    model: onnx.ModelProto,
    names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    limit: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Per batch (at most ``limit``), the float64 values of ``names`` computed by onnxruntime.

    ``model`` is not modified: a copy is cut down to computing ``names``. Graph optimisations are off, so a
    model with Q/DQ runs them as written; one thread.
    """
    import onnxruntime as ort

    work = onnx.ModelProto()
    work.CopyFrom(model)
    cut_to(work.graph, names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = inference_session(work, options)
    del work
    feeds = [i.name for i in session.get_inputs()]
    for index, batch in enumerate(batches):
        if limit is not None and index >= limit:
            return
        outputs = session.run(list(names), {name: batch[name] for name in feeds})
        yield {name: np.asarray(array, dtype=np.float64) for name, array in zip(names, outputs, strict=True)}


def channel_means(
    model: onnx.ModelProto,
    names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    limit: int | None = None,
) -> dict[str, np.ndarray]:
    """The float64 mean of each of ``names`` along axis 1 (channels), over the other axes and the batches
    (:func:`intermediate_outputs`: the model is not modified, at most ``limit`` batches)."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for values_of in intermediate_outputs(model, names, batches, limit):
        for name, values in values_of.items():
            channels = (
                values.reshape(values.shape[0], values.shape[1], -1) if values.ndim > 1 else values[None]
            )
            per_channel = channels.sum(axis=(0, 2)) if values.ndim > 1 else channels.sum(axis=0)
            sums[name] = sums.get(name, 0.0) + per_channel
            counts[name] = counts.get(name, 0) + (channels.size // channels.shape[1])
    return {name: sums[name] / counts[name] for name in sums}

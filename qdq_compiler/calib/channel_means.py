"""Per-channel means of intermediate tensors over calibration data (what bias correction compares)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx

from qdq_compiler.ir.external import inference_session

from .subgraph import cut_to


def channel_means(
    model: onnx.ModelProto,
    names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    limit: int | None = None,
) -> dict[str, np.ndarray]:
    """The float64 mean of each of ``names`` along axis 1 (channels), over the other axes and the batches.

    ``model`` is not modified: a copy is cut down to computing ``names``. Graph optimisations are off, so a
    model with Q/DQ runs them as written. Reads at most ``limit`` batches.
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
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for index, batch in enumerate(batches):
        if limit is not None and index >= limit:
            break
        outputs = session.run(list(names), {name: batch[name] for name in feeds})
        for name, array in zip(names, outputs, strict=True):
            values = np.asarray(array, dtype=np.float64)
            channels = (
                values.reshape(values.shape[0], values.shape[1], -1) if values.ndim > 1 else values[None]
            )
            per_channel = channels.sum(axis=(0, 2)) if values.ndim > 1 else channels.sum(axis=0)
            sums[name] = sums.get(name, 0.0) + per_channel
            counts[name] = counts.get(name, 0) + (channels.size // channels.shape[1])
    return {name: sums[name] / counts[name] for name in sums}

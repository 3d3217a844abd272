"""Per-channel |max| of intermediate tensors over calibration data (what channel equalisation balances)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx

from qdq_compiler.ir.external import inference_session

from .subgraph import cut_to


def channel_amax(
    model: onnx.ModelProto,
    names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    limit: int | None = None,
) -> dict[str, np.ndarray]:
    """The float64 max |x| of each of ``names`` per channel (axis 1), over the other axes and the batches.

    ``model`` is not modified: a copy is cut down to computing ``names``. Reads at most ``limit`` batches.
    A name no batch reached is missing from the result.
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
    amax: dict[str, np.ndarray] = {}
    for index, batch in enumerate(batches):
        if limit is not None and index >= limit:
            break
        outputs = session.run(list(names), {name: batch[name] for name in feeds})
        for name, array in zip(names, outputs, strict=True):
            values = np.abs(np.asarray(array, dtype=np.float64))
            if values.ndim < 2:
                continue
            per_channel = values.reshape(values.shape[0], values.shape[1], -1).max(axis=(0, 2))
            amax[name] = np.maximum(amax[name], per_channel) if name in amax else per_channel
    return amax

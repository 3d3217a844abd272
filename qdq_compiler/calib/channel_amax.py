"""Per-channel |max| of intermediate tensors over calibration data (what channel equalisation balances)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx

from .channel_means import intermediate_outputs


def channel_amax(
    model: onnx.ModelProto,
    names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    limit: int | None = None,
) -> dict[str, np.ndarray]:
    """The float64 max |x| of each of ``names`` per channel (axis 1), over the other axes and the batches
    (:func:`intermediate_outputs`: the model is not modified, at most ``limit`` batches). A name no batch
    reached, or with fewer than two axes, is missing from the result."""
    amax: dict[str, np.ndarray] = {}
    for values_of in intermediate_outputs(model, names, batches, limit):
        for name, values in values_of.items():
            if values.ndim < 2:
                continue
            per_channel = np.abs(values).reshape(values.shape[0], values.shape[1], -1).max(axis=(0, 2))
            amax[name] = np.maximum(amax[name], per_channel) if name in amax else per_channel
    return amax

"""Per-channel symmetric amax of constant weights, and which axis is the output channel."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import CalibrationMethodError
from .histogram import DEFAULT_NUM_BINS, TensorStats
from .methods import AMAX_FLOOR, MethodSpec, compute_amax, parse_method_spec

__all__ = ["per_channel_amax"]  # the axis itself: qdq_compiler.targets.trt_rules.WEIGHTED_OPS


def _channel_stats(channel: np.ndarray, num_bins: int) -> TensorStats:
    """One-shot |w| histogram of ``num_bins`` bins over ``[0, absmax]`` (no streaming needed for weights)."""
    magnitude = np.abs(channel.astype(np.float64).ravel())
    peak = float(magnitude.max())
    if peak == 0.0:
        hist = np.zeros(num_bins, dtype=np.int64)
        hist[0] = magnitude.size
    else:
        index = np.minimum((magnitude * (num_bins / peak)).astype(np.intp), num_bins - 1)
        hist = np.bincount(index, minlength=num_bins)
    return TensorStats.from_histogram(
        hist, peak, min_value=float(channel.min()), max_value=float(channel.max())
    )


def per_channel_amax(
    weight: np.ndarray,
    axis: int | None,
    method: str | MethodSpec = "max",
    num_bins: int = DEFAULT_NUM_BINS,
    **params: Any,
) -> np.ndarray:
    """amax of each slice of ``weight`` along ``axis`` (float64, shape ``[weight.shape[axis]]``).

    ``axis=None`` gives one per-tensor amax (shape ``[]``). ``max`` is exact; ``percentile`` and ``mse``
    build a ``num_bins`` histogram per channel over ``[0, channel absmax]`` and apply
    :func:`qdq_compiler.calib.methods.compute_amax` (``mse`` costs a few ms per channel). An all-zero channel
    gets ``AMAX_FLOOR``.
    """
    values = np.asarray(weight)
    if values.size == 0:
        raise CalibrationMethodError("cannot calibrate an empty weight")
    if not np.isfinite(values).all():
        raise CalibrationMethodError("weight holds NaN or Inf values")
    spec = parse_method_spec(method)
    if params:
        spec = MethodSpec(spec.name, tuple({**spec.kwargs, **params}.items()))
    if axis is None:
        moved = values.reshape(1, -1)
    else:
        if not -values.ndim <= axis < values.ndim:
            raise ValueError(f"axis {axis} is out of range for a weight of shape {list(values.shape)}")
        moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    if spec.name == "max":
        amax = np.max(np.abs(moved), axis=1).astype(np.float64)
        amax = np.maximum(amax, AMAX_FLOOR)
    else:
        rows = [compute_amax(_channel_stats(row, num_bins), spec) for row in moved]
        amax = np.array(rows, dtype=np.float64)
    return np.asarray(amax[0]) if axis is None else amax

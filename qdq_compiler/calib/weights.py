"""Per-channel symmetric amax of constant weights, and which axis is the output channel."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import CalibrationMethodError
from .histogram import DEFAULT_NUM_BINS, TensorStats
from .methods import AMAX_FLOOR, MethodSpec, compute_amax, parse_method_spec

# the output-channel axis itself: qdq_compiler.ir.op_facts.WEIGHTED_OPS
__all__ = ["ZERO_LAYER_AMAX", "per_channel_amax"]

# amax of an all-zero channel when the whole weight is zero (no other channel to take a scale from)
ZERO_LAYER_AMAX = 1.0


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
    :func:`qdq_compiler.calib.methods.compute_amax` (``mse`` costs a few ms per channel).

    An all-zero channel gets the median amax of the weight's non-zero channels (``ZERO_LAYER_AMAX``, 1.0, when
    every channel is zero). Its INT8 codes are 0 whatever the scale, so any positive scale stores it exactly;
    the scale matters only to a consumer that folds the float bias into the INT32 accumulator as
    ``bias / (s_in * s_w)``. The old floor (1e-8, scale 7.9e-11) overflowed INT32 there for any bias above
    ~1e-3. The median keeps the channel's bias step (``s_in * s_w``) as fine as, and its INT32 range as safe
    as, those of a typical channel of the same layer; a fixed amax of 1.0 could be far coarser than the
    layer's other channels (weights of 1e-3) or far finer.
    """
    values = np.asarray(weight)
    if values.size == 0:
        raise CalibrationMethodError("cannot calibrate an empty weight")
    if axis is None:
        moved = values.reshape(1, -1)
    else:
        if not -values.ndim <= axis < values.ndim:
            raise ValueError(f"axis {axis} is out of range for a weight of shape {list(values.shape)}")
        leading = values if axis % values.ndim == 0 else np.moveaxis(values, axis, 0)  # a no-op costs 20 us
        moved = leading.reshape(values.shape[axis], -1)
    absmax = np.abs(moved).max(axis=1)
    if not np.isfinite(absmax).all():  # a channel's max is NaN or Inf exactly when one of its values is
        raise CalibrationMethodError("weight holds NaN or Inf values")
    absmax = absmax.astype(np.float64)
    spec = parse_method_spec(method)
    if params:
        spec = MethodSpec(spec.name, tuple({**spec.kwargs, **params}.items()))
    if spec.name == "max":
        amax = np.maximum(absmax, AMAX_FLOOR)
    else:
        rows = [compute_amax(_channel_stats(row, num_bins), spec) for row in moved]
        amax = np.array(rows, dtype=np.float64)
    amax = _zero_channels_like_the_others(amax, absmax == 0.0)
    return np.asarray(amax[0]) if axis is None else amax


def _zero_channels_like_the_others(amax: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """``amax`` with the all-zero channels set to the median of the others (see per_channel_amax)."""
    if not zero.any():
        return amax
    fill = float(np.median(amax[~zero])) if not zero.all() else ZERO_LAYER_AMAX
    return np.where(zero, fill, amax)

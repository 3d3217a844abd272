"""Per-channel symmetric amax of constant weights, and which axis is the output channel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import CalibrationMethodError
from .histogram import DEFAULT_NUM_BINS, TensorStats
from .methods import AMAX_FLOOR, MethodSpec, compute_amax, parse_method_spec

__all__ = ["per_channel_amax", "weight_axis"]


def weight_axis(op_type: str, attrs: Mapping[str, Any] | None, input_index: int, weight_rank: int = 2) -> int:
    """Output-channel axis of the constant weight feeding input ``input_index`` of ``op_type``.

    Conv -> 0; ConvTranspose -> 1; Gemm B -> 0 with transB=1, 1 with transB=0; MatMul constant B
    ``[..., K, N]`` -> its last axis (``weight_rank - 1``). Anything else raises ``ValueError``.
    """
    attrs = attrs or {}
    if op_type in ("Conv", "ConvTranspose") and input_index == 1:
        return 0 if op_type == "Conv" else 1
    if op_type == "Gemm" and input_index == 1:
        return 0 if int(attrs.get("transB", 0)) else 1
    if op_type == "MatMul" and input_index == 1:
        if weight_rank < 2:
            raise ValueError(f"MatMul weight of rank {weight_rank} has no output-channel axis")
        return weight_rank - 1
    raise ValueError(f"no per-channel weight axis for input {input_index} of {op_type}")


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

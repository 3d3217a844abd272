"""The INT8 grid and the scale math on it: the one place the number 127 is written.

qdqc quantizes symmetrically with zero-point 0: a tensor's clipping threshold amax maps to the code 127, so
``scale = amax / 127``. Weights use the symmetric codes [-127, 127] (TensorRT, tensorrt-qdq.md s3);
activations may also take -128, the lowest INT8 code.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INT8_MAX",
    "INT8_MIN",
    "INT8_WEIGHT_RANGE",
    "integer_range",
    "quantize_symmetric",
    "scale_from_amax",
]

INT8_MAX = 127  # the largest INT8 code: amax maps to it
INT8_MIN = -128  # the lowest INT8 code (activations only; weights stop at -127)
INT8_WEIGHT_RANGE = (-INT8_MAX, INT8_MAX)  # symmetric weight codes


def scale_from_amax(amax: float | np.ndarray) -> np.ndarray:
    """The float32 INT8 scale ``amax / 127`` (per tensor or per channel), divided in float64."""
    return (np.asarray(amax, dtype=np.float64) / INT8_MAX).astype(np.float32)


def quantize_symmetric(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Symmetric INT8 codes of `values` for a `scale` that broadcasts against them.

    ``clip(round(values / scale), -127, 127)``, rounding half to even as QuantizeLinear does.
    """
    codes = np.rint(np.asarray(values, dtype=np.float64) / np.asarray(scale, dtype=np.float64))
    lowest, highest = INT8_WEIGHT_RANGE
    return np.minimum(np.maximum(codes, lowest), highest).astype(np.int8)  # np.clip, without its checks


def integer_range(dtype: np.dtype | type[np.integer]) -> tuple[int, int]:
    """(lowest, highest) code of an integer quantized type: (-128, 127) for INT8, (0, 255) for UINT8."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)

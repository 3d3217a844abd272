"""Scales taken over from a model that was already quantized (onnxruntime, Model Optimizer, ...).

``strip-qdq`` records, per float tensor name, the amax of the symmetric INT8 grid that covers the range the
imported quantizer represented; ``import-scales`` sets the scales of qdqc's own Q/DQ from them. A pair whose
range starts at exactly 0 also clamped its tensor (onnxruntime folds Relu and Clip into such a pair):
``implied_clamp`` gives that clamp, which strip-qdq puts back as a Relu or Clip.

The ranges are model state ``qdq_compiler.imported_amax`` (``{tensor name: amax}``), so a model saved between
the two passes (a reproducer, ``qdqc opt``) keeps them. The compiled model keeps them too (import-scales
must find them again when it runs twice; a few bytes per tensor), as the record of where its scales came from.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir.state import model_state, set_model_state
from qdq_compiler.quant.grid import integer_range

IMPORTED_AMAX_STATE = "imported_amax"

# relative distance of a quantizer's top from a whole number that still counts as the clamp's bound: a few
# float32 roundings of scale = bound / levels and of top = scale * levels
WHOLE_NUMBER_TOLERANCE = 1e-6  # relative, for float32 scales; a float16 scale carries ~1e-3 (see _tolerance)

# (lowest, highest) integer a quantizer of this type represents
_LEVELS = {np.dtype(dtype): integer_range(dtype) for dtype in (np.int8, np.uint8, np.int16, np.uint16)}


def covering_amax(scale: np.ndarray, zero_point: np.ndarray | None, dtype: np.dtype) -> float:
    """amax of the symmetric grid covering ``[(qmin - zp) * scale, (qmax - zp) * scale]`` (largest channel).

    A signed quantizer with zero-point 0 counts as symmetric (-127..127, TensorRT's grid): ``127 * scale``
    exactly, so its scale carries over unchanged. Any other zero-point z covers the type's full range:
    UINT8 gives ``scale * max(255 - z, z)``, INT8 ``scale * max(127 - z, z + 128)``.
    """
    if np.dtype(dtype) not in _LEVELS:
        raise ValueError(f"quantized type {np.dtype(dtype)} is not supported")
    low, high = _LEVELS[np.dtype(dtype)]
    scales = np.abs(np.asarray(scale, dtype=np.float64)).reshape(-1)
    zero = np.zeros(1) if zero_point is None else np.asarray(zero_point, dtype=np.float64).reshape(-1)
    reach = np.maximum(high - zero, zero - low)
    if low < 0:  # signed: with zero-point 0, the symmetric grid
        reach = np.where(zero == 0, high, reach)
    return float(np.max(scales * reach))


def implied_clamp(
    scale: np.ndarray, zero_point: np.ndarray | None, dtype: np.dtype
) -> tuple[float | None, float | None] | None:
    """The clamp a per-tensor quantizer applied that qdqc's symmetric grid would not: ``(0, None)`` for a
    Relu, ``(0, top)`` for a Clip such as Relu6, ``(bottom, top)`` for a two-sided Clip such as Clip(-1, 1)
    and ``(None, top)`` / ``(bottom, None)`` for one bound alone (see :func:`_two_sided_clamp`), None for no
    clamp.

    The range ``[(qmin - zp) * scale, (qmax - zp) * scale]`` starts at exactly 0 when the zero-point is the
    type's lowest code (UINT8 zp 0, INT8 zp -128): the pair maps every negative value to 0, as a Relu does.
    Its top is the calibrated maximum, an arbitrary number, except where the source model clamped the
    tensor from above and calibration saw the clamp's own bound: then the top is a whole number (6 for
    Relu6) to float32 precision, and that bound is returned. Symmetric and per-channel quantizers give None.
    """
    if np.dtype(dtype) not in _LEVELS or np.asarray(scale).size != 1:
        return None
    low, high = _LEVELS[np.dtype(dtype)]
    zero = 0 if zero_point is None else int(np.asarray(zero_point).reshape(-1)[0])
    step = float(np.asarray(scale, dtype=np.float64).reshape(()))
    if zero != low:
        return _two_sided_clamp(step, zero, low, high, _tolerance(scale))
    top = step * (high - zero)
    whole = round(top)
    if whole >= 1 and _is_whole(top, _tolerance(scale)):
        return 0.0, float(whole)
    return 0.0, None


def _two_sided_clamp(
    step: float, zero: int, low: int, high: int, tolerance: float
) -> tuple[float | None, float | None] | None:
    """The clamp such as Clip(-1, 1) applied by a pair whose range straddles 0: ``(bottom, top)``,
    ``(None, top)`` or ``(bottom, None)`` when only one bound was seen, else None.

    A quantizer fitted to a calibrated range [rmin, rmax] has ``step * (high - low) == rmax - rmin`` and ends
    within half a step of rmin and rmax (the zero-point is rounded). Where calibration saw a clamp's own
    whole-number bounds, the span is a whole number to float32 precision and both ends round to whole
    numbers: both bounds come back. Where it saw only the top (data below the bottom bound never came) of an
    asymmetric pair, the top end lies within half a step of a whole number >= 1, the float model's bound; the
    pair saturated there too, so a clamp at that whole number changes the imported model by at most half a
    step, while dropping it loses the float model's clamp. The same holds for a bottom <= -1 seen alone.
    """
    bottom_end, top_end = (low - zero) * step, (high - zero) * step
    span = step * (high - low)
    bottom, top = round(bottom_end), round(top_end)
    whole_ends = abs(bottom_end - bottom) <= step and abs(top_end - top) <= step
    if bottom < 0 < top and _is_whole(span, tolerance) and round(span) == top - bottom and whole_ends:
        return float(bottom), float(top)
    if zero == (low + high + 1) // 2:  # int8 0, uint8 128: symmetric, no clamp was folded into it
        return None
    if bottom_end < 0 and top >= 1 and abs(top_end - top) <= step / 2:
        return None, float(top)
    if top_end >= 0 and bottom <= -1 and abs(bottom_end - bottom) <= step / 2:
        return float(bottom), None
    return None


def _tolerance(scale: np.ndarray) -> float:
    """How far from a whole number a value computed from ``scale`` may be and still be one: its rounding."""
    return max(WHOLE_NUMBER_TOLERANCE, 4.0 * float(np.finfo(np.asarray(scale).dtype).eps))


def _is_whole(number: float, tolerance: float) -> bool:
    whole = round(number)
    return whole >= 1 and abs(number - whole) <= tolerance * whole


def imported_amax(model: ir.Model) -> dict[str, float] | None:
    """The amax per tensor name recorded by strip-qdq (None when it did not run on this model)."""
    recorded = model_state(model, IMPORTED_AMAX_STATE)
    if recorded is None:
        return None
    try:
        return {str(name): float(amax) for name, amax in recorded.items()}
    except (AttributeError, TypeError, ValueError) as exc:
        raise QdqcError(
            f"the model's metadata 'qdq_compiler.{IMPORTED_AMAX_STATE}' is malformed ({exc!r})"
        ) from None


def record_imported_amax(model: ir.Model, amax_by_name: dict[str, float]) -> None:
    """Keep the amax of these tensors (the larger one for a name seen before); an empty dict still records
    that scales were imported (none)."""
    recorded = imported_amax(model) or {}
    for name, amax in amax_by_name.items():
        recorded[name] = max(float(amax), recorded.get(name, 0.0))
    set_model_state(model, IMPORTED_AMAX_STATE, recorded)

"""The local half of ``--method auto``: score every candidate method on a tensor's own histogram.

The criterion (``local SQNR``): the expected squared error of 8-bit symmetric fake quantization with the
candidate's amax (rounding to ``amax / 127`` steps inside ``[-amax, amax]``, clipping beyond) of values
distributed as the tensor's histogram of |x|, each bin's values spread evenly over the bin, relative to
their expected signal power, in dB. Dividing by the signal makes the
scores of one method comparable across tensors; all methods are scored on the same histogram (the exact
``[0, absmax]`` grid that entropy and mse read, :meth:`TensorStats.on_absmax_grid`), so their scores are
comparable with each other.

The choice: the candidate with the highest local SQNR, except that the candidates within ``tolerance`` dB
of it count as equal, and among those the first in candidate order wins. The default order goes from the
method that clips least (max) to the ones that clip most, so a clipping method is chosen only where it
lowers the tensor's own error by more than the tolerance: mse minimises nearly this very error (on bins
from 128 on), so without a tolerance it would win almost everywhere by a hair.

A scale group (tensors TensorRT needs on one scale, :mod:`qdq_compiler.quant.scale_groups`) gets one method:
each candidate's group amax is the largest of its members' amax (the rule of unify-scales), scored by the
members' summed error over their summed signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qdq_compiler.quant.grid import INT8_MAX

from .errors import CalibrationMethodError
from .histogram import TensorStats

DEFAULT_CANDIDATES = (
    "max",
    "percentile{p=99.999}",
    "percentile{p=99.99}",
    "percentile{p=99.9}",
    "mse",
    "entropy",
)
DEFAULT_TOLERANCE_DB = 0.1
AUTO = "auto"
QMAX = INT8_MAX


@dataclass(frozen=True)
class TensorError:
    """Squared error and signal power of one tensor at one amax (sums over its histogram)."""

    noise: float
    signal: float

    @property
    def sqnr_db(self) -> float:
        from qdq_compiler.accuracy.numerics import sqnr_from_powers  # accuracy imports calib: late

        return sqnr_from_powers(self.signal, self.noise)


def _grid(stats: TensorStats) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges and counts of the tensor's histogram on the exact grid, up to its last non-empty bin."""
    grid = stats.on_absmax_grid() if stats.binning == "grow" else stats
    try:
        counts = np.asarray(grid.calibration_histogram(), dtype=np.float64)
    except ValueError as exc:  # statistics without a histogram
        raise CalibrationMethodError(str(exc)) from None
    nonzero = np.flatnonzero(counts)
    used = int(nonzero[-1]) + 1 if nonzero.size else 0
    edges = np.arange(used + 1, dtype=np.float64) * grid.hist_width
    return edges, counts[:used]


def _squared_error_integral(x: np.ndarray, amax: float) -> np.ndarray:
    """``integral from 0 to x of (fq(t) - t)**2 dt`` for ``x >= 0``, with ``fq`` the 8-bit fake quantizer.

    With step ``s = amax / 127``, rounding is periodic: ``G(x) = n s**3 / 12 + (r**3 + s**3 / 8) / 3`` is the
    integral from ``-s / 2``, where ``x = n s + r`` and ``-s/2 <= r < s/2``. From ``c = 127.5 s`` on every
    value is clipped to amax, adding ``((x - amax)**3 - (c - amax)**3) / 3``.
    """
    step = amax / QMAX
    cut = (QMAX + 0.5) * step

    def rounded(t: np.ndarray) -> np.ndarray:
        periods = np.floor((t + step / 2) / step)
        rest = t - periods * step
        return periods * step**3 / 12 + (rest**3 + step**3 / 8) / 3

    inside = np.minimum(x, cut)
    beyond = np.maximum(x, cut) - amax
    return rounded(inside) - rounded(np.zeros(1)) + (beyond**3 - (cut - amax) ** 3) / 3


def quantization_errors(stats: TensorStats, amaxes: Sequence[float]) -> list[TensorError]:
    """The expected error of every amax in ``amaxes`` on ``stats``' histogram, the values of each bin taken
    as spread evenly over it (see the module docstring)."""
    if stats.count == 0 or stats.absmax == 0.0:
        return [TensorError(0.0, 0.0) for _ in amaxes]
    edges, counts = _grid(stats)
    density = counts / np.diff(edges)
    signal = float(density @ np.diff(edges**3) / 3)
    errors = []
    for amax in amaxes:
        integral = _squared_error_integral(edges, float(amax))
        errors.append(TensorError(max(float(density @ np.diff(integral)), 0.0), signal))
    return errors


@dataclass(frozen=True)
class LocalChoice:
    """The candidates' amax and errors on one tensor or group, and the index of the chosen one."""

    amax: tuple[float, ...]
    errors: tuple[TensorError, ...]
    chosen: int

    @property
    def scores_db(self) -> tuple[float, ...]:
        return tuple(error.sqnr_db for error in self.errors)


def choose(errors: Sequence[TensorError], tolerance_db: float) -> int:
    """Index of the chosen candidate: the first whose local SQNR is within ``tolerance_db`` of the best."""
    if tolerance_db < 0:
        raise CalibrationMethodError(f"auto tolerance must be >= 0 dB, got {tolerance_db!r}")
    scores = [error.sqnr_db for error in errors]
    best = max(scores)
    if math.isinf(best):  # no noise at all (or no signal): the first candidate
        return next(index for index, score in enumerate(scores) if score == best)
    return next(index for index, score in enumerate(scores) if score >= best - tolerance_db)


def choose_for_tensor(stats: TensorStats, amaxes: Sequence[float], tolerance_db: float) -> LocalChoice:
    """The local choice among the candidates' ``amaxes`` for one tensor."""
    errors = quantization_errors(stats, amaxes)
    return LocalChoice(tuple(float(a) for a in amaxes), tuple(errors), choose(errors, tolerance_db))


def choose_for_group(
    members: Mapping[str, TensorStats],
    member_amax: Mapping[str, Sequence[float]],
    tolerance_db: float,
    fixed_amax: float = 0.0,
) -> LocalChoice:
    """One choice for a scale group: candidate ``i``'s group amax is the largest of every member's amax
    ``member_amax[name][i]`` (and ``fixed_amax``, the largest amax of members calibrated otherwise); its
    score is the members' summed error at that amax over their summed signal."""
    names = sorted(members)
    count = len(member_amax[names[0]])
    group_amax = [max([fixed_amax] + [float(member_amax[name][i]) for name in names]) for i in range(count)]
    noise = [0.0] * count
    signal = [0.0] * count
    for name in names:
        for i, error in enumerate(quantization_errors(members[name], group_amax)):
            noise[i] += error.noise
            signal[i] += error.signal
    errors = tuple(TensorError(n, s) for n, s in zip(noise, signal, strict=True))
    return LocalChoice(tuple(group_amax), errors, choose(errors, tolerance_db))


def check_candidates(candidates: Sequence[str]) -> None:
    """CalibrationMethodError unless ``candidates`` is a non-empty list of method specs other than auto."""
    from .methods import parse_method_spec

    if not candidates:
        raise CalibrationMethodError("auto needs at least one candidate method")
    seen = set()
    for text in candidates:
        spec = parse_method_spec(text)
        if spec.name == AUTO:
            raise CalibrationMethodError("auto cannot be one of auto's candidates")
        if str(spec) in seen:
            raise CalibrationMethodError(f"auto candidate {str(spec)!r} is given twice")
        seen.add(str(spec))


def amax_auto(
    stats: TensorStats,
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES,
    tolerance: float = DEFAULT_TOLERANCE_DB,
    validate: bool = True,
    samples: int = 64,
    score: str = "sqnr",
) -> float:
    """amax of the candidate with the best local SQNR on this tensor alone (see the module docstring).

    ``validate``, ``samples`` and ``score`` act on a whole model only: there the per-tensor mix (chosen per
    scale group) is compared on the model's outputs with every candidate used for all tensors, over the
    first ``samples`` samples, by output SQNR (``score=sqnr``) or by `qdqc eval`'s task metric against FP32
    then SQNR (``score=metric``), on the evaluation engine (:mod:`qdq_compiler.search.method_auto`), and the
    calibrate pass keeps the best (:mod:`qdq_compiler.quant.auto_method`).
    """
    from .methods import compute_amax

    check_candidates(candidates)
    if samples < 1:
        raise CalibrationMethodError(f"auto samples must be a positive integer, got {samples!r}")
    if score not in ("sqnr", "metric"):
        raise CalibrationMethodError(f"auto score must be sqnr or metric, got {score!r}")
    amaxes = [compute_amax(stats, text) for text in candidates]
    choice = choose_for_tensor(stats, amaxes, tolerance)
    return choice.amax[choice.chosen]

"""Turn a :class:`TensorStats` into an amax (the clipping threshold; INT8 scale = amax / 127).

Methods (all results are clamped to ``[AMAX_FLOOR, max(absmax, AMAX_FLOOR)]``):

* ``max`` -- the largest finite |x| seen.
* ``percentile{p=99.99}`` -- the upper edge of the first histogram bin at which the cumulative count reaches
  the nearest rank ``ceil(p / 100 * count)``, clamped to absmax. At least ``p`` percent of the values are
  <= amax, and amax exceeds the nearest-rank value by at most one bin width. (pytorch-quantization returns
  the lower edge of that bin instead.)
* ``entropy{start_bin=128,stride=1}`` -- the KL-divergence calibration of TensorRT / pytorch-quantization,
  see :func:`amax_entropy`.
* ``mse{start_bin=128,stride=1}`` -- the bin centre minimising the count-weighted squared error of 8-bit
  symmetric fake quantization of the bin centres, see :func:`amax_mse`.
* ``auto{candidates=[max,...],tolerance=0.1,validate=true,samples=64}`` -- per tensor, the candidate with
  the best local SQNR on the tensor's own histogram (:mod:`qdq_compiler.calib.auto`); in the calibrate pass
  chosen per scale group and validated on the model's outputs (:mod:`qdq_compiler.quant.auto_method`).

``percentile``, ``entropy`` and ``mse`` read the statistics' histogram of |x| (bin ``k`` starts at ``k *
hist_width``; see :mod:`qdq_compiler.calib.histogram`): by default the one-pass histogram whose range grows
with the data, as pytorch-quantization's histogram calibrator builds it; with two-pass statistics
(``exact=True``) ``num_bins`` bins over exactly ``[0, absmax]``. ``entropy`` and ``mse`` read a one-pass
histogram re-binned onto that exact grid (:meth:`TensorStats.on_absmax_grid`), so where the first batch's
range put the bin edges does not move their minima, and consider the histogram up to its last non-empty bin
(the one holding absmax).

A tensor whose values are all zero gets ``AMAX_FLOOR`` (1e-8), so its scale 1e-8 / 127 is positive and a
normal float32. A tensor that never saw a finite value is an error.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from fractions import Fraction

import numpy as np

from qdq_compiler.errors import PipelineError
from qdq_compiler.pm.options import format_value, kebab, parse_value, split_top_level
from qdq_compiler.quant.grid import INT8_MAX

from .auto import amax_auto
from .errors import CalibrationMethodError
from .histogram import TensorStats

__all__ = [
    "AMAX_FLOOR",
    "MethodPlan",
    "MethodSpec",
    "amax_entropy",
    "amax_max",
    "amax_mse",
    "amax_percentile",
    "available_methods",
    "compute_amax",
    "memoized_amax",
    "parse_method_spec",
    "parse_override",
    "register_method",
]

AMAX_FLOOR = 1e-8
NUM_LEVELS = INT8_MAX + 1  # 8-bit signed: 127 positive levels + zero
QMAX = INT8_MAX
# Divergences closer than this (in nats) to the minimum count as ties (the last one wins).
ENTROPY_TIE_TOLERANCE = 1e-12

MethodFn = Callable[..., float]
ParamValue = int | float | bool

# amax already computed inside a `memoized_amax()` block, keyed by the statistics' content and the method
_AMAX_MEMO: contextvars.ContextVar[dict[tuple, float] | None] = contextvars.ContextVar(
    "amax_memo", default=None
)


@contextlib.contextmanager
def memoized_amax(memo: dict | None = None) -> Iterator[None]:
    """Within this block, :func:`compute_amax` computes each (statistics content, method) once.

    For callers that compile one model many times over the same statistics (``qdqc sensitivity``). The key
    is the method with its typed parameters and a digest of what a method may read (histogram, range, base,
    binning, count, extremes; not the tensor name), so statistics updated inside the block are never served
    a stale amax. ``memo``: a dict to keep the amax in across blocks (a worker measuring many variants).
    """
    token = _AMAX_MEMO.set({} if memo is None else memo)
    try:
        yield
    finally:
        _AMAX_MEMO.reset(token)


def _content_key(stats: TensorStats, spec: MethodSpec) -> tuple:
    digest = hashlib.blake2b(np.ascontiguousarray(stats.hist).tobytes(), digest_size=16).hexdigest()
    params = tuple((key, type(value).__name__, value) for key, value in spec.params)  # True is not 1
    return (
        spec.name,
        params,
        digest,
        stats.hist.size,
        stats.range,
        stats.base,
        stats.binning,
        stats.num_bins,
        stats.count,
        stats.min,
        stats.max,
    )


def _used_bins(counts: np.ndarray) -> int:
    """Number of bins up to and including the last non-empty one."""
    nonzero = np.flatnonzero(counts)
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def _calibration_histogram(stats: TensorStats) -> np.ndarray:
    try:
        return stats.calibration_histogram()
    except ValueError as exc:
        raise CalibrationMethodError(str(exc)) from None


def _on_absmax_grid(stats: TensorStats) -> TensorStats:
    """The statistics entropy and mse read: a one-pass histogram re-binned onto the exact (two-pass) grid.

    The minima of entropy and mse move with where the bin edges fall; the grown histogram's edges depend
    on the first batch, the exact grid's only on absmax. See :meth:`TensorStats.on_absmax_grid`.
    """
    return stats.on_absmax_grid() if stats.binning == "grow" else stats


# --------------------------------------------------------------------------- methods
def amax_max(stats: TensorStats) -> float:
    """Largest finite |x|."""
    return stats.absmax


def amax_percentile(stats: TensorStats, p: float = 99.99) -> float:
    """Upper edge of the stored bin holding the nearest-rank ``p`` percentile (clamped to absmax)."""
    if not 0 < p <= 100:
        raise CalibrationMethodError(f"percentile p must be in (0, 100], got {p!r}")
    if stats.binning == "none":
        _calibration_histogram(stats)  # raises
    cumulative = np.cumsum(stats.hist)
    total = int(cumulative[-1])
    # nearest rank ceil(p * n / 100), in integers: p as the decimal it prints as (99.9, not the binary
    # 99.9000000000000057), so an exact rank is not rounded up, and no float error for any count
    numerator, denominator = _decimal_ratio(float(p))
    rank = max(1, -(-numerator * total // (denominator * 100)))
    index = min(int(np.searchsorted(cumulative, rank, side="left")), stats.hist.size - 1)
    return min((index + 1) * stats.hist_width, stats.absmax)


@functools.lru_cache(maxsize=64)
def _decimal_ratio(p: float) -> tuple[int, int]:
    """``p`` as the decimal it prints as, a reduced fraction (numerator, denominator): parsed once per p."""
    exact = Fraction(repr(p))
    return exact.numerator, exact.denominator


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x * log(y)`` with 0 where ``x == 0`` (y is then ignored)."""
    return np.where(x > 0, x * np.log(np.where(y > 0, y, 1)), 0)


@functools.lru_cache(maxsize=16)
def _entropy_level_bounds(start_bin: int, stride: int, used: int) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds, bounds)`` for the thresholds ``start_bin, start_bin + stride, ... <= used``:
    ``bounds[i, l]`` is the first bin of level ``l`` (0..128) under threshold ``i`` (read-only)."""
    thresholds = np.arange(start_bin, used + 1, stride, dtype=np.int64)
    levels = np.arange(NUM_LEVELS + 1, dtype=np.int64)
    bounds = ((levels[None, :] * thresholds[:, None] + NUM_LEVELS - 1) // NUM_LEVELS).astype(np.intp)
    thresholds.flags.writeable = False
    bounds.flags.writeable = False
    return thresholds, bounds


def entropy_divergences(
    hist: np.ndarray, start_bin: int = 128, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """KL divergences of every candidate threshold of ``hist`` (already truncated to its used bins).

    Returns ``(thresholds, divergences)``: threshold ``i`` keeps bins ``[0, i)``. Definition (pytorch-
    quantization's ``_compute_amax_entropy``): bin 0 takes the count of bin 1 (so the zeros of a ReLU do not
    dominate); the reference ``p`` is bins ``[0, i)`` with the clipped tail added to bin ``i - 1``; the
    candidate ``q`` splits bin ``j`` into level ``floor(j * 128 / i)``, gives each level's total (over bins
    ``[0, i)``, tail excluded) evenly to that level's non-empty bins and zero to empty ones; the divergence is
    KL(p || q) of the normalised distributions (infinite where p > 0 and q = 0).

    The sum over bins is computed per level from prefix sums, not bin by bin; the levels' first bins depend
    on the thresholds only and are cached. The long prefix sums run in extended precision; the per-level
    terms (each within a few ulps) in float64, several times faster.
    """
    counts = np.asarray(hist, dtype=np.float64).copy()
    used = counts.size
    counts[0] = counts[1]
    wide = np.longdouble
    prefix_count = np.concatenate(([0.0], np.cumsum(counts)))  # exact: integers below 2**53
    prefix_nonzero = np.concatenate(([0], np.cumsum(counts > 0)))
    wide_counts = counts.astype(wide)
    prefix_plogp = np.concatenate(([wide(0)], np.cumsum(_xlogy(wide_counts, wide_counts))))
    total = prefix_count[-1]

    thresholds, bounds = _entropy_level_bounds(start_bin, stride, used)
    level_sum = np.diff(np.take(prefix_count, bounds), axis=1)
    level_nonzero = np.diff(np.take(prefix_nonzero, bounds), axis=1)
    spread = level_sum / np.maximum(level_nonzero, 1)  # 0 where the level is empty
    log_spread = np.log(np.maximum(spread, 1.0))  # spread is 0 or >= 1 (a mean of positive counts)
    plogq = np.sum(level_sum * log_spread, axis=1).astype(wide)

    last = counts[thresholds - 1]
    tail = total - prefix_count[thresholds]
    p_last = (last + tail).astype(wide)
    plogp = prefix_plogp[thresholds - 1] + _xlogy(p_last, p_last)
    plogq = plogq + (tail * log_spread[:, -1]).astype(wide)
    kept = prefix_count[thresholds].astype(wide)
    with np.errstate(divide="ignore", invalid="ignore"):
        divergence = (plogp - plogq) / wide(total) - np.log(wide(total)) + np.log(kept)
    divergence = divergence.astype(np.float64)
    divergence[(last == 0) & (tail > 0)] = np.inf  # p has the tail where q is empty
    return thresholds, divergence


def amax_entropy(stats: TensorStats, start_bin: int = 128, stride: int = 1) -> float:
    """Threshold minimising KL(reference || quantized) over bins; the last minimum wins on ties.

    Candidates are ``i = start_bin, start_bin + stride, ...`` up to the number of used bins; amax is the
    upper edge of bin ``i - 1`` (``edges[i]``), clamped to absmax.
    """
    _check_positive_int("start_bin", start_bin)
    _check_positive_int("stride", stride)
    if start_bin < NUM_LEVELS:
        raise CalibrationMethodError(f"entropy start_bin must be >= {NUM_LEVELS}, got {start_bin}")
    stats = _on_absmax_grid(stats)
    counts = _calibration_histogram(stats)
    used = _used_bins(counts)
    if used <= start_bin:  # fewer bins than candidates: nothing to clip
        return stats.absmax
    thresholds, divergence = entropy_divergences(counts[:used], start_bin, stride)
    finite = np.isfinite(divergence)
    if not finite.any():
        return stats.absmax
    best = np.min(divergence[finite])
    winner = int(np.flatnonzero(divergence <= best + ENTROPY_TIE_TOLERANCE)[-1])
    return min(float(thresholds[winner]) * stats.hist_width, stats.absmax)


def mse_errors(
    centers: np.ndarray, counts: np.ndarray, candidates: np.ndarray, chunk: int = 128
) -> np.ndarray:
    """Count-weighted squared error of fake-quantizing ``centers`` with amax = each candidate (float64).

    The definition evaluated directly, a pass over the bins per candidate. :func:`amax_mse` finds the same
    minimum exactly and faster with :func:`mse_error_sums`.
    """
    errors = np.empty(candidates.size, dtype=np.float64)
    occupied = counts > 0  # empty bins add nothing
    centers, weights = centers[occupied], counts[occupied].astype(np.float64)
    for start in range(0, candidates.size, chunk):
        amax = candidates[start : start + chunk, None]
        scale = QMAX / amax
        quantized = np.clip(np.round(centers[None, :] * scale), -QMAX, QMAX) / scale
        errors[start : start + chunk] = ((quantized - centers[None, :]) ** 2) @ weights
    return errors


# The mse in integers. With bin width w, bin j's centre is t_j * w / 2 (t_j = 2j + 1) and candidate bin
# k's is D * w / 2 (D = 2k + 1), so bin j quantizes to level q_j = min(round(127 t_j / D), 127) with
# error (q_j D - 127 t_j) * w / 254. The squared error is (w / 254)**2 times the integer
#     I_k = sum_j n_j (q_j D - 127 t_j)**2 = D**2 sum n q**2 - 254 D sum n q t + 127**2 sum n t**2.
# 127 t / D is never a half-integer (254 t is even, D odd): the rounding has no ties, and q_j >= q >= 1
# exactly for the bins j >= b_q = floor(((2q - 1) D - 254) / 508) + 1. With the tail sums
# T0[b] = sum_{j>=b} n_j and T1[b] = sum_{j>=b} n_j t_j (and q**2 = sum_{q'<=q} (2q' - 1)):
#     sum n q**2 = sum_{q=1..127} (2q - 1) T0[b_q]   and   sum n q t = sum_{q=1..127} T1[b_q],
# 127 look-ups per candidate instead of a pass over the bins; the table b_q depends on the candidates only.
_MSE_ODD = 2 * np.arange(1, QMAX + 1, dtype=np.int64) - 1  # 2q - 1 for the levels q = 1..127
_INT64_SAFE = 2**62
_FLOAT64_EXACT = 2**53
# Relative bound on the float64 rounding of the three-term sum (a few ulps of its largest term), generous.
_MSE_FLOAT_SLACK = 1e-14


@functools.lru_cache(maxsize=16)
def _mse_level_starts(start_bin: int, stride: int, used: int) -> tuple[np.ndarray, np.ndarray]:
    """``(D, b)`` for the candidates ``k = start_bin, start_bin + stride, ... < used``: ``D = 2k + 1`` and
    ``b[i, q - 1]``, the first bin quantized to level ``q`` or above (read-only)."""
    doubled = 2 * np.arange(start_bin, used, stride, dtype=np.int64) + 1
    starts = np.maximum((_MSE_ODD[None, :] * doubled[:, None] - 254) // 508 + 1, 0).astype(np.intp)
    doubled.flags.writeable = False
    starts.flags.writeable = False
    return doubled, starts


@dataclass(frozen=True)
class MseSums:
    """The exact pieces of the mse of every candidate: ``I = D**2 * sum_q2 - 254 D * sum_qt + 127**2 *
    sum_t2`` (see the comment above). The arrays hold integers: float64 while exact, else int64 or Python
    integers."""

    candidates: np.ndarray  # bin index k of each candidate
    doubled: np.ndarray  # D = 2k + 1
    sum_q2: np.ndarray
    sum_qt: np.ndarray
    sum_t2: int

    def exact(self, index: int) -> int:
        """``I`` of candidate ``index`` as a Python integer."""
        d = int(self.doubled[index])
        return d * d * int(self.sum_q2[index]) - 254 * d * int(self.sum_qt[index]) + QMAX * QMAX * self.sum_t2

    def approximate(self) -> tuple[np.ndarray, np.ndarray]:
        """``I`` of every candidate in float64 and a bound on its rounding error."""
        d = self.doubled.astype(np.float64)
        quadratic = d * d * self.sum_q2.astype(np.float64)
        linear = 254.0 * d * self.sum_qt.astype(np.float64)
        constant = float(QMAX * QMAX * self.sum_t2)
        return quadratic - linear + constant, _MSE_FLOAT_SLACK * (quadratic + linear + constant)


def mse_error_sums(counts: np.ndarray, start_bin: int = 128, stride: int = 1, prune: bool = True) -> MseSums:
    """:class:`MseSums` of the candidate bins ``start_bin, start_bin + stride, ... < len(counts)``.

    With ``prune``, only the candidates that can hold the minimum: see :func:`_first_contender`.
    """
    n = np.asarray(counts, dtype=np.int64)
    doubled, starts = _mse_level_starts(start_bin, stride, n.size)
    t = 2 * np.arange(n.size, dtype=np.int64) + 1
    total, largest = int(n.sum()), int(t[-1])
    # partial sums of sum_q2 reach 127**2 * total and those of sum_qt 127 * largest * total: float64 (BLAS)
    # while every partial sum is an integer below 2**53, then int64, past that Python integers
    reach = QMAX * max(QMAX, largest) * total
    exact_type: type = np.float64 if reach < _FLOAT64_EXACT else np.int64 if reach < _INT64_SAFE else object
    if largest * largest * total < _INT64_SAFE:  # every tail sum fits int64
        tails = [_tail_sums(values) for values in (n, n * t, n * t * t)]
        sum_t2 = int(tails[2][0])
        if prune:
            first = _first_contender(tails, doubled)
            doubled, starts = doubled[first:], starts[first:]
        tail0: np.ndarray = tails[0].astype(exact_type)
        tail1: np.ndarray = tails[1].astype(exact_type)
    else:
        sum_t2 = sum(int(count) * int(odd) ** 2 for count, odd in zip(n, t))
        tail0 = _tail_sums(n.astype(exact_type))
        tail1 = _tail_sums(n.astype(exact_type) * t.astype(exact_type))
    ones: np.ndarray = np.ones(QMAX, dtype=exact_type)
    return MseSums(
        candidates=(doubled - 1) // 2,
        doubled=doubled,
        sum_q2=np.take(tail0, starts) @ _MSE_ODD.astype(exact_type),
        sum_qt=np.take(tail1, starts) @ ones,
        sum_t2=sum_t2,
    )


def _first_contender(tails: list[np.ndarray], doubled: np.ndarray) -> int:
    """Index of the first candidate that can hold the minimum error, from the int64 tail sums of ``n``,
    ``n t`` and ``n t**2``.

    The bins quantized past level 127 (``j >= b_128``) are clipped, with error ``127 (t_j - D)``; every
    other bin's error is below ``D / 2``. So the clipped bins' error is a lower bound of a candidate's
    error, and adding ``(D / 2)**2`` per other value an upper bound. The lower bound shrinks as the
    candidate grows (fewer bins clipped, each by less): the candidates whose lower bound exceeds the
    smallest upper bound form a prefix, and none of them is the minimum.
    """
    tail0, tail1, tail2 = tails
    clip_start = np.minimum((255 * doubled - 254) // 508 + 1, tail0.size - 1)
    clipped_sq = tail2[clip_start] - 2 * doubled * tail1[clip_start] + doubled * doubled * tail0[clip_start]
    lower = QMAX * QMAX * clipped_sq.astype(np.float64)
    upper = lower + (tail0[0] - tail0[clip_start]) * (doubled.astype(np.float64) / 2) ** 2
    # float64 rounds each bound by a few ulps: keep a margin
    return int(np.argmax(lower * (1 - 1e-12) <= np.min(upper) * (1 + 1e-12)))


def _tail_sums(values: np.ndarray) -> np.ndarray:
    """``out[b] = sum(values[b:])`` for ``b = 0..len(values)`` (the last one 0)."""
    return np.concatenate((np.cumsum(values[::-1])[::-1], np.zeros(1, dtype=values.dtype)))


def _first_exact_minimum(sums: MseSums) -> int:
    """Index of the first candidate with the smallest exact error.

    The float64 errors pick the few candidates that can be the minimum (within their rounding bound of the
    smallest); their exact integer errors decide, the first of equal ones winning.
    """
    approx, slack = sums.approximate()
    contenders = [int(index) for index in np.flatnonzero(approx - slack <= np.min(approx + slack))]
    return min(contenders, key=lambda index: (sums.exact(index), index))


def amax_mse(stats: TensorStats, start_bin: int = 128, stride: int = 1) -> float:
    """Bin centre (from bin ``start_bin`` on) minimising the squared error of 8-bit fake quantization.

    Every used bin's centre ``c`` stands for its ``count`` values; for a candidate amax ``a`` the error is
    ``sum(count * (clip(round(c * 127 / a), -127, 127) * a / 127 - c) ** 2)``. The first minimum wins; the
    errors are compared exactly (integers, see :func:`mse_error_sums`), so float rounding never picks a
    bin. Unlike pytorch-quantization, the last used bin's centre is a candidate too.
    """
    _check_positive_int("start_bin", start_bin)
    _check_positive_int("stride", stride)
    stats = _on_absmax_grid(stats)
    counts = _calibration_histogram(stats)
    used = _used_bins(counts)
    if used <= start_bin:
        return stats.absmax
    sums = mse_error_sums(counts[:used], int(start_bin), int(stride))
    best = int(sums.candidates[_first_exact_minimum(sums)])
    return min((best + 0.5) * stats.hist_width, stats.absmax)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CalibrationMethodError(f"{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------- registry
_METHODS: dict[str, MethodFn] = {}


_OPTIONS: dict[str, type] = {}  # method name -> its options dataclass (typed fields, defaults)


def register_method(name: str, fn: MethodFn) -> None:
    """Register ``fn(stats, **params) -> float`` under ``name``; a name clash is an error.

    The keyword parameters after ``stats`` are the method's options: :func:`method_options` turns them into a
    dataclass, and spec text is read with the pass-option grammar (``qdq_compiler.pm.options``).
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise CalibrationMethodError(f"invalid calibration method name {name!r}")
    if name in _METHODS:
        raise CalibrationMethodError(f"calibration method {name!r} is already registered")
    _OPTIONS[name] = _options_dataclass(name, fn)
    _METHODS[name] = fn
    _parse_spec_text.cache_clear()  # no text parsed for a method registered before keeps its old options


def available_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_METHODS)


def method_options(name: str) -> type:
    """The options dataclass of a registered method, e.g. ``percentile`` -> fields ``p: float = 99.99``."""
    options = _OPTIONS.get(name)
    if options is None:
        options = _OPTIONS[name] = _options_dataclass(name, _METHODS[name])
    return options


def _options_dataclass(name: str, fn: MethodFn) -> type:
    """A frozen dataclass of ``fn``'s options: annotated types, else the type of the default.

    An option with neither (``lambda stats, k: ...``) takes its type from the text (bool, int or float).
    """
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
    fields = []
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        default = param.default
        annotation = hints.get(param.name)
        if annotation is None and isinstance(default, bool | int | float):
            annotation = type(default)
        spec = field(default=default) if default is not inspect.Parameter.empty else field(default=None)
        fields.append((param.name, annotation if annotation is not None else typing.Any, spec))
    title = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    return dataclasses.make_dataclass(f"{title}Options", fields, frozen=True)


def _method_params(name: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(method_options(name))}


@dataclass(frozen=True)
class MethodSpec:
    """A method name with its parameters; ``str()`` gives the canonical text, e.g. ``percentile{p=99.9}``."""

    name: str
    params: tuple[tuple[str, ParamValue], ...] = ()

    def __post_init__(self) -> None:
        _check_known(self.name, [key for key, _ in self.params])
        object.__setattr__(self, "params", tuple(sorted(dict(self.params).items())))

    @property
    def kwargs(self) -> dict[str, ParamValue]:
        return dict(self.params)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        inner = ",".join(f"{kebab(key)}={format_value(value)}" for key, value in self.params)
        return f"{self.name}{{{inner}}}"


def _check_known(name: str, keys: Iterable[str]) -> None:
    """CalibrationMethodError for an unknown method, or an option its dataclass does not have."""
    if name not in _METHODS:
        raise CalibrationMethodError(
            f"unknown calibration method {name!r}; valid: {', '.join(available_methods())}"
        )
    accepted = _method_params(name)
    for key in keys:
        if key not in accepted:
            valid = ", ".join(accepted) or "none"
            raise CalibrationMethodError(f"method {name!r} has no option {key!r}; valid: {valid}")


def _parse_option(name: str, key: str, text: str, spec: str) -> ParamValue:
    """One option's text as the type its method declares (the pass-option value grammar)."""
    annotation = typing.get_type_hints(method_options(name)).get(key, typing.Any)
    if annotation is typing.Any:
        return _infer_value(text, spec)
    try:
        return parse_value(text.strip(), annotation, f"{name}{{{kebab(key)}}}")
    except PipelineError as exc:
        raise CalibrationMethodError(
            f"bad option value {text.strip()!r} in method spec {spec!r}: {exc}"
        ) from None


def _infer_value(text: str, spec: str) -> ParamValue:
    """An untyped option's value: true/false, an integer or a number."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(lowered)
    except ValueError:
        pass
    try:
        return float(lowered)
    except ValueError:
        raise CalibrationMethodError(f"bad option value {text.strip()!r} in method spec {spec!r}") from None


_SPEC_RE = re.compile(r"\s*([A-Za-z][\w-]*)\s*(?:\{(.*)\})?\s*", re.DOTALL)


def parse_method_spec(spec: str | MethodSpec) -> MethodSpec:
    """Parse ``"name"`` or ``"name{key=value,...}"`` (kebab- or snake-case keys) into a MethodSpec.

    Each text is parsed once (weights ask for their method per layer); a MethodSpec is returned as is.
    """
    if isinstance(spec, MethodSpec):
        return spec
    return _parse_spec_text(spec)


@functools.lru_cache(maxsize=256)
def _parse_spec_text(spec: str) -> MethodSpec:
    """:func:`parse_method_spec` of a text (a MethodSpec is immutable, so one can be shared)."""
    match = _SPEC_RE.fullmatch(spec)
    if not match:
        raise CalibrationMethodError(f"malformed method spec {spec!r}; expected NAME or NAME{{KEY=VALUE}}")
    name, body = match.group(1).lower(), match.group(2)
    texts: dict[str, str] = {}
    if body is not None and body.strip():
        for item in split_top_level(body, ","):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
                raise CalibrationMethodError(f"malformed option {item.strip()!r} in method spec {spec!r}")
            if key in texts:
                raise CalibrationMethodError(f"option {key!r} given twice in method spec {spec!r}")
            texts[key] = value
    _check_known(name, texts)  # an unknown method or option is reported before a bad value
    return MethodSpec(name, tuple((key, _parse_option(name, key, text, spec)) for key, text in texts.items()))


for _name, _fn in (
    ("max", amax_max),
    ("percentile", amax_percentile),
    ("entropy", amax_entropy),
    ("mse", amax_mse),
    ("auto", amax_auto),
):
    register_method(_name, _fn)


def compute_amax(stats: TensorStats, method: str | MethodSpec = "max", **params: ParamValue) -> float:
    """amax of ``stats`` by ``method`` (a name or spec text; ``params`` override the spec's options)."""
    spec = parse_method_spec(method)
    if params:
        spec = MethodSpec(spec.name, tuple({**spec.kwargs, **params}.items()))
    if stats.count == 0:
        label = f"tensor {stats.name!r}" if stats.name else "tensor"
        raise CalibrationMethodError(f"{label} has no finite values to calibrate")
    if stats.absmax == 0.0:
        return AMAX_FLOOR
    memo = _AMAX_MEMO.get()
    key = _content_key(stats, spec) if memo is not None else ()
    if memo is not None and key in memo:
        return memo[key]
    amax = float(_METHODS[spec.name](stats, **spec.kwargs))
    if not np.isfinite(amax) or amax < 0:
        raise CalibrationMethodError(f"method {spec} returned an invalid amax {amax!r} for {stats.name!r}")
    amax = max(min(amax, stats.absmax), AMAX_FLOOR)
    if memo is not None:
        memo[key] = amax
    return amax


# --------------------------------------------------------------------------- plans
def parse_override(text: str) -> tuple[str, MethodSpec]:
    """Parse ``"PATTERN=SPEC"`` (e.g. ``"op:Sigmoid=max"``, ``"/head/*=percentile{p=99.9}"``)."""
    pattern, sep, spec = text.partition("=")
    if not sep or not pattern.strip() or not spec.strip():
        raise CalibrationMethodError(f"malformed override {text!r}; expected PATTERN=METHOD")
    return pattern.strip(), parse_method_spec(spec)


@dataclass(frozen=True)
class MethodPlan:
    """Which method calibrates which tensor: a default and ordered ``(pattern, spec)`` overrides.

    A pattern is an fnmatch pattern on the tensor name, or ``op:PATTERN`` matched against the op types the
    caller associates with the tensor (its producer/consumers). The first matching override wins.
    """

    default: str | MethodSpec = "entropy"
    overrides: Sequence[tuple[str, str | MethodSpec]] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", parse_method_spec(self.default))
        normalized = []
        for item in self.overrides:
            if isinstance(item, str):
                normalized.append(parse_override(item))
                continue
            pattern, spec = item
            if not pattern or pattern == "op:":
                raise CalibrationMethodError(f"empty override pattern {pattern!r}")
            normalized.append((pattern, parse_method_spec(spec)))
        object.__setattr__(self, "overrides", tuple(normalized))

    def method_for(self, tensor_name: str, op_types: Iterable[str] = ()) -> MethodSpec:
        """The spec that applies to ``tensor_name`` whose producer/consumer op types are ``op_types``."""
        ops = tuple(op_types)
        for pattern, spec in self.overrides:
            if pattern.startswith("op:"):
                if any(fnmatchcase(op, pattern[3:]) for op in ops):
                    return parse_method_spec(spec)  # a MethodSpec since __post_init__: returned as is
            elif fnmatchcase(tensor_name, pattern):
                return parse_method_spec(spec)
        return parse_method_spec(self.default)

    def unmatched_patterns(
        self, tensor_names: Iterable[str], op_types: Mapping[str, Iterable[str]] | None = None
    ) -> list[str]:
        """Override patterns that match none of ``tensor_names`` (nor, for ``op:``, their op types)."""
        names = list(tensor_names)
        ops = {op for name in names for op in (op_types or {}).get(name, ())}
        unmatched = []
        for pattern, _ in self.overrides:
            if pattern.startswith("op:"):
                matched = any(fnmatchcase(op, pattern[3:]) for op in ops)
            else:
                matched = any(fnmatchcase(name, pattern) for name in names)
            if not matched:
                unmatched.append(pattern)
        return unmatched

    def compute(
        self, stats: Mapping[str, TensorStats], op_types: Mapping[str, Iterable[str]] | None = None
    ) -> dict[str, float]:
        """amax of every tensor in ``stats`` (sorted by name)."""
        op_types = op_types or {}
        return {
            name: compute_amax(stats[name], self.method_for(name, op_types.get(name, ())))
            for name in sorted(stats)
        }

    def __str__(self) -> str:
        parts = [str(self.default)] + [f"{pattern}={spec}" for pattern, spec in self.overrides]
        return ";".join(parts)

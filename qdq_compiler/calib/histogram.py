"""Per-tensor statistics: extremes, counts and a histogram of |x| (documented in docs/calibration-cache.md).

The methods read a histogram of |x| with equal bins starting at 0. A :class:`TensorStats` builds one of two
(``binning``):

* ``"grow"`` (the default, one pass; the histogram of pytorch-quantization's calibrator, whose range grows
  as larger values arrive). The first batch holding a non-zero value fixes ``range`` = its
  largest |x| and the bin width ``range / num_bins``: bins ``[k * width, (k + 1) * width)``, except that bin
  ``num_bins - 1`` also holds ``range`` itself (so the first batch alone fills exactly ``num_bins`` bins over
  ``[0, range]``, as ``np.histogram`` would). A later value above ``range`` appends bins of the same width,
  so the histogram ends with the bin holding the largest |x|. Counting is commutative once the width is
  fixed: the result does not depend on how the later batches are cut or ordered, only on the first one.
  More than ``max_bins`` bins (``DEFAULT_MAX_BINS`` = 32 x 2048; the data grew 32-fold after the first
  batch) merge adjacent pairs, doubling the width, which is exact (``floor(v / 2w) == floor(floor(v / w) /
  2)``).
* ``"fixed"`` -- ``num_bins`` bins over ``[0, range]`` with ``range`` fixed before the first value (the value
  ``range`` in the last bin). With ``range = absmax``, found by a first pass over the data (two passes:
  ``collect_statistics(exact=True)``, :func:`collect_exact`), this is the histogram over exactly ``[0,
  absmax]`` whatever the order of the data. A value above ``range`` is an error. Weights use it too.
* ``"none"`` -- extremes and counts only (the first of the two passes).

Memory is at most ``max_bins`` int64 counters per tensor, whatever the number of samples.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable

import numpy as np

__all__ = [
    "BINNINGS",
    "DEFAULT_MAX_BINS",
    "DEFAULT_NUM_BINS",
    "TensorStats",
    "check_same_pass",
    "collect_exact",
]

DEFAULT_NUM_BINS = 2048
GROWTH_BEFORE_MERGING = 32  # default max_bins = this many times num_bins
DEFAULT_MAX_BINS = GROWTH_BEFORE_MERGING * DEFAULT_NUM_BINS
BINNINGS = ("grow", "fixed", "none")
# Values binned per block: the block (1 MiB of float32) and its int32 index and float64 scratch buffers
# (1 + 2 MiB) stay in cache.
_CHUNK = 1 << 18
# Bin indices stay below this, which keeps the rounded-up index of _Binner exact (see _accumulate).
_MAX_BINS_LIMIT = 1 << 24
_SMALLEST_WIDTH = 2.0**-1000  # a bin narrower than this would underflow as it is divided
_buffers = threading.local()  # per thread: reused block buffers (fresh pages cost a fault each on first use)

logger = logging.getLogger(__name__)


def _is_pow2(value: float) -> bool:
    return value > 0 and math.frexp(value)[0] == 0.5


def _buffer(dtype: type[np.generic], size: int) -> np.ndarray:
    """A scratch array of ``size`` elements, reused by later calls in this thread (contents undefined)."""
    key = np.dtype(dtype).str
    held = getattr(_buffers, key, None)
    if held is None or held.size < size:
        held = np.empty(max(size, _CHUNK), dtype=dtype)
        setattr(_buffers, key, held)
    return held[:size]


def _as_base(value: float) -> int | float:
    """``base`` as stored: an int while whole (the cache then writes ``2048``, not ``2048.0``)."""
    return int(value) if value == int(value) else float(value)


class _Binner:
    """``|trunc(v * base / top)|`` as int32 for signed float arrays, one of three ways (see
    :meth:`TensorStats._accumulate`).

    ============  ===========================================  =============================================
    path          when                                         computation
    ============  ===========================================  =============================================
    pow2_scale    ``base / top`` is a power of two             ``v * scale`` (float32 loop for float32
                                                               data, float64 otherwise): no rounding at all
    rounded_up    float32 data and ``top``, ``base <= 2**20``  ``v * scale`` in float64, ``scale`` rounded
                                                               up two ulps: exact floor for float32 values
    divide        anything else (float64 data...)              ``v / (top / base)`` in float64 (or
                                                               ``v * base / top``): exact for float32
                                                               values, may be one bin off near an edge for
                                                               float64 values
    ============  ===========================================  =============================================

    Rounding to nearest is symmetric and the cast truncates towards zero, so the magnitude of the signed
    result is ``floor(|v| * base / top)``: no separate ``|v|`` pass. Float32 data are widened by a plain copy
    first, which numpy does several times faster than a mixed-type multiply.
    """

    def __init__(self, base: float, top: float, dtype: np.dtype) -> None:
        scale = base / top
        self.pow2_scale = _is_pow2(scale) and 2.0**-100 <= scale <= 2.0**100
        self.pow2_base = _is_pow2(base)
        self.rounded_up = (
            not self.pow2_scale
            and dtype == np.float32
            and float(np.float32(top)) == top
            and base <= 2.0**20
            and 2.0**-900 <= scale <= 2.0**900
        )
        self.narrow_loop = self.pow2_scale and dtype == np.float32  # exact in float32: no widening
        if self.rounded_up:
            self.factor = np.nextafter(np.nextafter(np.float64(scale), np.inf), np.inf)
        else:
            self.factor = (np.float32 if self.narrow_loop else np.float64)(scale)
        self.width = np.float64(top / base)
        self.base, self.top = np.float64(base), np.float64(top)

    def __call__(self, values: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
        """Write the bin index of every value of ``values`` into the int32 ``out``.

        ``scratch`` is a float32 buffer for :attr:`narrow_loop`, else a float64 one, of the same size.
        """
        if self.narrow_loop:
            np.multiply(values, self.factor, out=scratch)
        else:
            if values.dtype == np.float64:
                source = values
            else:
                np.copyto(scratch, values)
                source = scratch
            if self.pow2_scale or self.rounded_up:
                np.multiply(source, self.factor, out=scratch)
            elif self.pow2_base:
                np.divide(source, self.width, out=scratch)
            else:
                np.multiply(source, self.base, out=scratch)
                np.divide(scratch, self.top, out=scratch)
        np.copyto(out, scratch, casting="unsafe")
        np.abs(out, out=out)

    def scratch(self, size: int) -> np.ndarray:
        return _buffer(np.float32 if self.narrow_loop else np.float64, size)

    def index(self, value: float, dtype: np.dtype) -> int:
        out = np.empty(1, dtype=np.int32)
        self(np.array([value], dtype=dtype), out, self.scratch(1))
        return int(out[0])


class TensorStats:
    """Statistics of one tensor: min, max, finite/NaN/Inf counts and a histogram of |x|.

    ``update`` skips NaN and +-Inf (counted in ``nan_count`` / ``inf_count``; a warning is logged once per
    tensor). ``min``, ``max``, ``count`` and the histogram cover finite values only.

    ``TensorStats(num_bins)`` streams in one pass (``"grow"`` binning); ``TensorStats(num_bins,
    fixed_range=absmax)`` bins over a range known in advance; ``TensorStats(num_bins, histogram=False)``
    keeps extremes and counts only.

    ``range`` is the value closing bin ``base - 1`` (``base`` bins cover ``[0, range]``): the first batch's
    absmax for ``"grow"`` (0.0 until a non-zero value arrives), the fixed range for ``"fixed"``.
    """

    __slots__ = (
        "name",
        "num_bins",
        "binning",
        "hist",
        "range",
        "base",
        "max_bins",
        "count",
        "nan_count",
        "inf_count",
        "min",
        "max",
        "_warned",
    )

    def __init__(
        self,
        num_bins: int = DEFAULT_NUM_BINS,
        name: str = "",
        *,
        fixed_range: float | None = None,
        histogram: bool = True,
        max_bins: int | None = None,
    ) -> None:
        if not isinstance(num_bins, (int, np.integer)) or num_bins < 2 or num_bins % 2:
            raise ValueError(f"num_bins must be an even integer >= 2, got {num_bins!r}")
        self.name = name
        self.num_bins = int(num_bins)
        self.base: int | float = self.num_bins  # an int while whole: see _as_base
        if self.num_bins > _MAX_BINS_LIMIT:
            raise ValueError(f"num_bins {num_bins!r} is above 2**24")
        default_max = min(GROWTH_BEFORE_MERGING * self.num_bins, _MAX_BINS_LIMIT)
        self.max_bins = default_max if max_bins is None else int(max_bins)
        if self.max_bins < self.num_bins:
            raise ValueError(f"max_bins {max_bins!r} is below num_bins {num_bins!r}")
        if self.max_bins > _MAX_BINS_LIMIT:
            raise ValueError(f"max_bins {max_bins!r} is above 2**24")
        self.range = 0.0
        if not histogram:
            self.binning, size = "none", 0
        elif fixed_range is not None:
            if not (fixed_range >= 0 and math.isfinite(fixed_range)):
                raise ValueError(f"fixed_range must be finite and >= 0, got {fixed_range!r}")
            self.binning, size, self.range = "fixed", self.num_bins, float(fixed_range)
        else:
            self.binning, size = "grow", self.num_bins
        self.hist = np.zeros(size, dtype=np.int64)
        self.count = 0
        self.nan_count = 0
        self.inf_count = 0
        self.min = math.inf
        self.max = -math.inf
        self._warned = False

    # ------------------------------------------------------------------ views
    @property
    def absmax(self) -> float:
        """Largest finite |x| seen (0.0 before any finite value)."""
        return max(-self.min, self.max) if self.count else 0.0

    @property
    def hist_width(self) -> float:
        """Width of one histogram bin, ``range / base`` (0.0 while the range is 0)."""
        return self.range / self.base if self.range > 0 else 0.0

    @property
    def edges(self) -> np.ndarray:
        """The ``len(hist) + 1`` bin edges, float64."""
        return np.arange(self.hist.size + 1, dtype=np.float64) * self.hist_width

    def calibration_histogram(self) -> np.ndarray:
        """The int64 counts of |x| the methods read (bin ``k`` starts at ``k * hist_width``)."""
        if self.binning == "none":
            label = f"tensor {self.name!r}" if self.name else "these statistics"
            raise ValueError(f"{label} were collected without a histogram")
        return self.hist

    def __repr__(self) -> str:
        return (
            f"TensorStats(name={self.name!r}, binning={self.binning!r}, count={self.count}, "
            f"min={self.min:.6g}, max={self.max:.6g}, range={self.range:.6g}, num_bins={self.num_bins}, "
            f"hist_bins={self.hist.size}, nan={self.nan_count}, inf={self.inf_count})"
        )

    # --------------------------------------------------------------- building
    @classmethod
    def from_histogram(
        cls,
        hist: np.ndarray,
        hist_range: float,
        *,
        min_value: float,
        max_value: float,
        count: int | None = None,
        nan_count: int = 0,
        inf_count: int = 0,
        name: str = "",
        num_bins: int | None = None,
        binning: str = "fixed",
        base: float | None = None,
    ) -> TensorStats:
        """Build statistics from an existing |x| histogram (e.g. a cache entry).

        ``hist_range`` and ``base`` as the attributes ``range`` and ``base``; ``num_bins`` defaults to
        ``len(hist)`` for ``"fixed"`` and ``base`` to ``num_bins``.
        """
        counts = np.asarray(hist)
        if counts.ndim != 1 or counts.size < 1:
            raise ValueError(f"histogram must be 1-D and not empty, got shape {counts.shape}")
        if binning not in ("fixed", "grow"):
            raise ValueError(f"binning must be 'fixed' or 'grow', got {binning!r}")
        num_bins = counts.size if num_bins is None else int(num_bins)
        base = num_bins if base is None else _as_base(base)
        if binning == "fixed" and (counts.size != num_bins or base != num_bins):
            raise ValueError(f"a fixed histogram has num_bins bins: {counts.size} for num_bins {num_bins}")
        if binning == "grow" and not (base > 0 and _is_pow2(num_bins / base) and counts.size >= max(base, 1)):
            raise ValueError(
                f"a grow histogram of {counts.size} bins cannot have base {base} (num_bins {num_bins} halved)"
            )
        if np.any(counts < 0):
            raise ValueError("histogram counts must be non-negative")
        if not (hist_range >= 0 and math.isfinite(hist_range)):
            raise ValueError(f"histogram range must be finite and >= 0, got {hist_range!r}")
        stats = cls(num_bins, name=name, fixed_range=hist_range if binning == "fixed" else None)
        stats.max_bins = max(stats.max_bins, counts.size)  # (a custom max_bins is not kept)
        stats.hist = counts.astype(np.int64, copy=True)
        stats.range, stats.base = float(hist_range), base
        stats.count = int(stats.hist.sum()) if count is None else int(count)
        if stats.count != int(stats.hist.sum()):
            raise ValueError(f"count {stats.count} differs from the histogram total {int(stats.hist.sum())}")
        if stats.count:
            stats.min, stats.max = float(min_value), float(max_value)
            top = stats.hist.size * stats.hist_width
            if stats.absmax > max(top, stats.range):
                raise ValueError(f"absmax {stats.absmax!r} lies outside the histogram's [0, {top!r}]")
        stats.nan_count = int(nan_count)
        stats.inf_count = int(inf_count)
        return stats

    def on_absmax_grid(self) -> TensorStats:
        """These statistics with the histogram re-binned onto ``num_bins`` bins over exactly ``[0, absmax]``.

        The grid of the two-pass (exact) histogram. A histogram already on it (fixed over ``[0, absmax]``, or
        grown from a first batch that held absmax) is returned as is. A grown histogram is never coarser than
        the grid (``num_bins`` or more bins of width ``range / base`` up to ``absmax >= range``), so each
        exact bin is a run of whole grown bins plus parts of at most two: a part takes the share of its
        bin's count that its width has (values spread evenly in a bin), and the cumulative counts at the
        exact edges are rounded, so the counts stay integers with the same total. Two values are known
        exactly and never spread: one at ``absmax`` (in the last bin) and one at ``range`` (the first batch's
        absmax, which the grown histogram keeps in bin ``base - 1`` below its edge). Equal to the exact
        histogram when the exact edges are grown edges (absmax = range times a power of two, say); otherwise
        each cumulative count is within about one grown bin's count of the exact one.
        """
        absmax = self.absmax
        if self.binning == "none" or absmax == 0.0 or (self.range == absmax and self.base == self.num_bins):
            return self
        counts = self.hist.astype(np.float64)
        used = int(np.flatnonzero(counts)[-1]) + 1
        counts = counts[:used]
        points = [absmax]
        counts[-1] -= 1  # the value at absmax
        top = self.base - 1 if isinstance(self.base, int) and self.base >= 1 else -1
        if self.binning == "grow" and self.range < absmax and 0 <= top < used - 1 and counts[top] >= 1:
            counts[top] -= 1  # the value at range, counted below its edge
            points.append(self.range)
        width = self.hist_width
        prefix = np.concatenate(([0.0], np.cumsum(counts)))
        # exact edges k * absmax / num_bins, in grown bins; the last grown bin ends at absmax, not at its edge
        edges = np.arange(self.num_bins + 1, dtype=np.float64) * (absmax / self.num_bins)
        index = np.minimum((edges / width).astype(np.int64), used - 1)
        upper = np.minimum((index + 1) * width, absmax)
        low = index * width
        share = np.divide(edges - low, upper - low, out=np.ones_like(edges), where=upper > low)
        cumulative = prefix[index] + counts[index] * np.clip(share, 0.0, 1.0)
        cumulative[0], cumulative[-1] = 0.0, prefix[-1]
        rounded = np.floor(cumulative + 0.5).astype(np.int64)
        hist = np.diff(rounded)
        for point in points:
            hist[min(int(point * self.num_bins / absmax), self.num_bins - 1)] += 1
        return TensorStats.from_histogram(
            hist,
            absmax,
            min_value=self.min,
            max_value=self.max,
            count=self.count,
            nan_count=self.nan_count,
            inf_count=self.inf_count,
            name=self.name,
            num_bins=self.num_bins,
        )

    def copy(self) -> TensorStats:
        """Return an independent copy."""
        other = TensorStats.__new__(TensorStats)
        for attr in self.__slots__:
            setattr(other, attr, getattr(self, attr))
        other.hist = self.hist.copy()
        return other

    # --------------------------------------------------------------- updating
    def update(self, values: np.ndarray) -> None:
        """Accumulate a batch of values (any shape); the array is not kept.

        With a fixed range, a finite |x| above it raises ``ValueError`` (nothing is counted then).
        """
        data = np.asarray(values)
        if data.size == 0:
            return
        if not np.issubdtype(data.dtype, np.floating):
            data = data.astype(np.float64)
        elif data.dtype.itemsize < 4:
            data = data.astype(np.float32)
        data = data.reshape(-1)
        if self.binning == "grow" and self.range > 0.0 and data.size > _CHUNK:
            # the bins are set and counting is order-free: block by block, each block's extremes and bins
            # are found while it is in cache (one read of the batch from memory instead of two)
            for start in range(0, data.size, _CHUNK):
                self._update_flat(data[start : start + _CHUNK])
        else:
            self._update_flat(data)

    def _update_flat(self, data: np.ndarray) -> None:
        """:meth:`update` for a non-empty 1-D float array."""
        lo, hi = data.min(), data.max()  # NaN propagates, so both finite means every value is
        if not (math.isfinite(lo) and math.isfinite(hi)):
            data = self._drop_non_finite(data)
            if data.size == 0:
                return
            lo, hi = data.min(), data.max()
        lo, hi = float(lo), float(hi)
        peak = max(-lo, hi)
        if self.binning == "fixed" and peak > self.range:
            label = f"tensor {self.name!r}" if self.name else "tensor"
            raise ValueError(f"{label}: |x| = {peak!r} exceeds the fixed histogram range {self.range!r}")
        if self.binning == "grow" and peak > self.range:
            self._grow(peak, data.dtype)
        if self.binning != "none":
            if self.range == 0.0:  # every value is 0
                self.hist[0] += data.size
            else:
                self._accumulate(data, peak)
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += int(data.size)

    def _drop_non_finite(self, data: np.ndarray) -> np.ndarray:
        finite = np.isfinite(data)
        nans = int(np.count_nonzero(np.isnan(data)))
        self.nan_count += nans
        self.inf_count += int(data.size - np.count_nonzero(finite)) - nans
        if not self._warned:
            logger.warning(
                "tensor %r holds NaN/Inf values; calibration skips them (so far %d NaN, %d Inf)",
                self.name,
                self.nan_count,
                self.inf_count,
            )
            self._warned = True
        return data[finite]

    def _grow(self, peak: float, dtype: np.dtype) -> None:
        """Make room for ``peak``: fix the range on the first non-zero value, else append (and merge) bins."""
        if self.range == 0.0:
            if not peak / self.base >= _SMALLEST_WIDTH:
                raise ValueError(
                    f"tensor {self.name!r}: its first non-zero |x| ({peak!r}) is too small to "
                    f"split into {self.base} bins"
                )
            self.range = peak  # the first non-zero batch: base bins over [0, peak]
            return
        # peak / width may exceed any integer: first merge by the power of two that logs say (a floor of the
        # exact count, so never too many), then pair by pair on the exact bin index
        excess = math.log2(peak) - math.log2(self.range) + math.log2(self.base) - math.log2(self.max_bins)
        for _ in range(max(0, math.floor(excess) - 1)):
            self._merge_pairs()
        while (needed := _Binner(self.base, self.range, dtype).index(peak, dtype) + 1) > self.max_bins:
            self._merge_pairs()
        if needed > self.hist.size:
            self.hist = np.concatenate([self.hist, np.zeros(needed - self.hist.size, dtype=np.int64)])

    def _merge_pairs(self) -> None:
        """Double the bin width: bins ``2k, 2k + 1`` become bin ``k`` (``base`` halves, maybe below 1)."""
        counts = self.hist if self.hist.size % 2 == 0 else np.append(self.hist, 0)
        self.hist = counts.reshape(-1, 2).sum(axis=1)
        self.base = _as_base(self.base / 2)
        if self.base == 0.0:
            raise ValueError(f"tensor {self.name!r}: |x| spans more than the float64 range of bin widths")

    def _accumulate(self, data: np.ndarray, peak: float) -> None:
        """Add ``floor(|v| * base / range)`` of every (finite) value, ``range`` itself into bin ``base - 1``.

        The index is exact in real arithmetic, so a value on a bin edge lands in the upper bin, as in
        ``np.histogram``:

        * a power-of-two ``base / range`` multiplies exactly (float32 or float64);
        * float32 values and range: ``|v|`` times ``base / range`` rounded up by two float64 ulps. For a
          non-integer quotient ``q``, ``|v| * base - k * range`` is a non-zero multiple of the smaller float32
          ulp, so ``q`` sits at least ~2**-44 (relative) below the next integer, far above the <= 3 * 2**-52
          the rounded factor and product can add; an integer ``q`` (an edge value) can only come out at or
          above ``q``;
        * otherwise ``|v|`` is divided by the bin width ``range / base`` in float64 (``|v| * base`` by
          ``range`` when ``base`` is not a power of two). For float32 values and range that is exact too (one
          rounding of the exact quotient cannot cross an integer); for float64 values a value within a
          rounding of an edge may land one bin off, and an index past the last bin is counted in it.
        """
        size = self.hist.size
        binner = _Binner(self.base, self.range, data.dtype)
        # `range` computes to index `base` but belongs to bin base - 1 (an integer base; with a fractional
        # base, left after merges, floor(base) is already its bin)
        range_index = self.base if isinstance(self.base, int) and self.base >= 1 else size
        # values equal to `range` can only be told apart when `range` is one of this dtype's values
        top = data.dtype.type(self.range)
        at_top = peak >= self.range and float(top) == self.range
        block = min(data.size, _CHUNK)
        index = _buffer(np.int32, block)
        scratch = binner.scratch(block)
        hist = self.hist
        for start in range(0, data.size, block):
            part = data[start : start + block]
            idx = index[: part.size]
            binner(part, idx, scratch[: part.size])
            counts = np.bincount(idx, minlength=size)
            if at_top and counts.size > range_index and counts[range_index]:
                moved = int(np.count_nonzero((idx == range_index) & ((part == top) | (part == -top))))
                counts[range_index] -= moved
                counts[range_index - 1] += moved
            hist += counts[:size]
            if counts.size > size:  # only float64 values a rounding below the top edge: keep them counted
                hist[-1] += counts[size:].sum()

    def merge(self, other: TensorStats) -> None:
        """Add another tensor's statistics (same binning and ``num_bins``; the same ``range`` once set).

        Two ``"grow"`` histograms over the same first range may have merged bin pairs a different number of
        times (one saw larger values): the finer one is coarsened to the other's width first, which is exact
        (see the module docstring), so statistics collected over shards of the data and merged equal those of
        one pass over all of it, once the shards start from the same range (:meth:`empty_like`).
        """
        same = (other.num_bins, other.binning) == (self.num_bins, self.binning)
        if self.binning == "fixed":  # the range is set up front: it must agree whenever values come in
            clash = bool(other.count) and other.range != self.range
        else:  # a grow range is set by the first non-zero value
            clash = bool(
                other.count
                and self.count
                and other.range > 0
                and self.range > 0
                and (
                    other.range != self.range
                    or not _is_pow2(max(self.base, other.base) / min(self.base, other.base))
                )
            )
        if not same or clash:
            raise ValueError(
                f"cannot merge {other.binning} statistics over [0, {other.range}] in {other.base} bins into "
                f"{self.binning} statistics over [0, {self.range}] in {self.base} bins"
            )
        if other.count:
            if self.range == 0.0:
                self.range, self.base = other.range, other.base
            other_hist = other.hist
            if self.binning == "grow" and other.range > 0:
                while self.base > other.base:
                    self._merge_pairs()
                if other.base > self.base:
                    coarser = other.copy()
                    while coarser.base > self.base:
                        coarser._merge_pairs()
                    other_hist = coarser.hist
            size = max(self.hist.size, other_hist.size)
            merged = np.zeros(size, dtype=np.int64)
            merged[: self.hist.size] += self.hist
            merged[: other_hist.size] += other_hist
            self.hist = merged
            self.count += other.count
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
            if self.binning == "grow":
                self._trim()
        self.nan_count += other.nan_count
        self.inf_count += other.inf_count

    def _trim(self) -> None:
        """Drop empty bins past the one holding the largest value (one pass never makes them), keeping at
        least ``base`` bins."""
        used = np.flatnonzero(self.hist)
        keep = max(math.ceil(self.base), int(used[-1]) + 1 if used.size else 0)
        if keep < self.hist.size:
            self.hist = self.hist[:keep].copy()

    def empty_like(self) -> TensorStats:
        """No values yet, but this histogram's binning (``range``, ``base``, size): a worker streaming a shard
        of the data into it makes statistics that :meth:`merge` adds to these exactly."""
        other = self.copy()
        other.hist = np.zeros_like(self.hist)
        other.count = other.nan_count = other.inf_count = 0
        other.min, other.max = math.inf, -math.inf
        return other


def collect_exact(
    batches: Iterable[np.ndarray], num_bins: int = DEFAULT_NUM_BINS, name: str = ""
) -> TensorStats:
    """Exact statistics of re-iterable ``batches`` in two passes: absmax first, then the fixed histogram.

    Memory does not grow with the data; ``batches`` must give the same values twice (a list, a tuple, or
    any object whose ``__iter__`` starts over).
    """
    if iter(batches) is batches:
        raise ValueError("collect_exact reads the batches twice; got a one-shot iterator")
    first = TensorStats(num_bins, name, histogram=False)
    for batch in batches:
        first.update(batch)
    stats = TensorStats(num_bins, name, fixed_range=first.absmax)
    for batch in batches:
        stats.update(batch)
    check_same_pass(first, stats)
    return stats


def check_same_pass(first: TensorStats, second: TensorStats) -> None:
    """Raise ``ValueError`` unless two passes over the same data saw the same values (extremes, counts)."""
    seen = [(s.count, s.nan_count, s.inf_count, s.min, s.max) for s in (first, second)]
    if seen[0] != seen[1]:
        label = f"tensor {first.name!r}" if first.name else "tensor"
        raise ValueError(
            f"{label} differs between the two calibration passes (count, NaN, Inf, min, max: {seen[0]} then "
            f"{seen[1]}): the data or the model is not deterministic"
        )

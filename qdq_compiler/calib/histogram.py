"""Per-tensor statistics: extremes, counts and a histogram of |x| (documented in docs/calibration-cache.md).

The calibration methods work on the *calibration histogram*: ``num_bins`` (2048) equal bins over
``[0, absmax]``, ``absmax`` being the largest finite |x| of all the data; value ``v`` falls into bin ``k``
when ``k * absmax / num_bins <= |v| < (k + 1) * absmax / num_bins``, absmax itself into the last bin (as
``np.histogram`` bins). That is the definition of TensorRT / pytorch-quantization. A :class:`TensorStats`
stores one of two histograms (``binning``):

* ``"fixed"`` -- ``num_bins`` bins over ``[0, range]`` with ``range`` fixed before the first value. With
  ``range = absmax`` (found by a first pass over the data, see :func:`collect_exact` and
  ``collect_statistics(exact=True)``) the stored histogram *is* the calibration histogram, count for count.
  A value above ``range`` is an error. Weights (one shot over ``[0, absmax]``) use this binning too.
* ``"pow2"`` -- one pass, range unknown in advance: ``num_bins * oversample`` bins (16 x 2048 by default)
  over ``[0, range]``, ``range`` being the smallest power of two strictly above the running absmax. When a
  value ``>= range`` arrives the range doubles (as often as needed) and adjacent bin pairs merge, which is
  exact (``floor(v / 2w) == floor(floor(v / w) / 2)``): the stored histogram does not depend on batching or
  order. :meth:`TensorStats.calibration_histogram` re-bins it onto ``[0, absmax]`` (:func:`rebin`): the
  exact cumulative count is known at every stored edge; a stored bin straddling a target edge is split in
  proportion to its length; the value at absmax is kept in the last bin. Each target count is therefore off
  by at most the counts of the two stored bins that straddle its edges (each 1/8 to 1/16 of a target bin
  wide). That is *not* enough for entropy and mse to match the exact histogram: their minima are set by the
  bin-to-bin sampling noise of the counts, and the re-binning noise moves them by up to ~100 bins on some
  tensors. One pass is the fallback for data that can be read only once.
* ``"none"`` -- extremes and counts only (the first of the two passes).

Memory is ``num_bins`` (fixed) or ``num_bins * oversample`` (pow2) int64 counters per tensor, whatever the
number of samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np

__all__ = [
    "DEFAULT_NUM_BINS",
    "DEFAULT_OVERSAMPLE",
    "TensorStats",
    "collect_exact",
    "pow2_above",
    "rebin",
]

DEFAULT_NUM_BINS = 2048
DEFAULT_OVERSAMPLE = 16
BINNINGS = ("fixed", "pow2", "none")
# Values binned per block: the |x| and index buffers (1 + 2 MiB for float32) stay in cache.
_CHUNK = 1 << 18

logger = logging.getLogger(__name__)


def pow2_above(value: float) -> float:
    """Return the smallest power of two strictly greater than ``value`` (``value`` > 0)."""
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"pow2_above needs a finite positive value, got {value!r}")
    return math.ldexp(1.0, math.frexp(value)[1])  # value = m * 2**e with 0.5 <= m < 1, so value < 2**e


def _is_pow2(value: float) -> bool:
    return value > 0 and math.frexp(value)[0] == 0.5


def rebin(hist: np.ndarray, hist_range: float, absmax: float, num_bins: int) -> np.ndarray:
    """Re-bin ``len(hist)`` equal bins over ``[0, hist_range]`` onto ``num_bins`` bins over ``[0, absmax]``.

    ``absmax`` (<= ``hist_range``) is the largest value counted; at least one value equals it. The
    cumulative count is exact at the stored edges and linear inside a stored bin (its values are taken as
    spread evenly over the part of it below absmax, except one value sitting at absmax); the target
    cumulative counts are rounded to integers, so the result is an int64 histogram with the same total.
    """
    counts = np.asarray(hist, dtype=np.int64)
    total = int(counts.sum())
    out = np.zeros(num_bins, dtype=np.int64)
    if total == 0:
        return out
    if absmax <= 0.0:
        out[0] = total
        return out
    size = counts.size
    if size == num_bins and hist_range == absmax:
        return counts.copy()
    width = hist_range / size
    top = min(int(math.floor(absmax / width)), size - 1)  # stored bin holding absmax
    cumulative = np.concatenate(([0], np.cumsum(counts[: top + 1]))).astype(np.float64)
    edges = np.arange(top + 1, dtype=np.float64) * width
    if edges[top] < absmax:  # bin `top` spans [edges[top], absmax]; one of its values is absmax itself
        xs = np.append(edges, absmax)
        ys = np.append(cumulative[: top + 1], max(total - 1.0, cumulative[top]))
    else:  # absmax is a stored edge: every value of bin `top` equals absmax
        xs, ys = edges, cumulative[: top + 1]
    targets = np.arange(num_bins, dtype=np.float64) * (absmax / num_bins)
    below = np.floor(np.interp(targets, xs, ys) + 0.5).astype(np.int64)
    return np.diff(np.append(below, total))


class TensorStats:
    """Statistics of one tensor: min, max, finite/NaN/Inf counts and a histogram of |x|.

    ``update`` skips NaN and +-Inf (counted in ``nan_count`` / ``inf_count``; a warning is logged once per
    tensor). ``min``, ``max``, ``count`` and the histogram cover finite values only.

    ``TensorStats(num_bins)`` streams in one pass (``"pow2"`` binning); ``TensorStats(num_bins,
    fixed_range=absmax)`` builds the exact calibration histogram of data whose absmax is known;
    ``TensorStats(num_bins, histogram=False)`` keeps extremes and counts only.
    """

    __slots__ = (
        "name", "num_bins", "binning", "hist", "range", "count", "nan_count", "inf_count", "min", "max",
        "_warned",
    )

    def __init__(
        self,
        num_bins: int = DEFAULT_NUM_BINS,
        name: str = "",
        *,
        oversample: int = DEFAULT_OVERSAMPLE,
        fixed_range: float | None = None,
        histogram: bool = True,
    ) -> None:
        if not isinstance(num_bins, (int, np.integer)) or num_bins < 2 or num_bins % 2:
            raise ValueError(f"num_bins must be an even integer >= 2, got {num_bins!r}")
        if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)) or oversample < 1:
            raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
        self.name = name
        self.num_bins = int(num_bins)
        self.range = 0.0
        if not histogram:
            self.binning, size = "none", 0
        elif fixed_range is not None:
            if not (fixed_range >= 0 and math.isfinite(fixed_range)):
                raise ValueError(f"fixed_range must be finite and >= 0, got {fixed_range!r}")
            self.binning, size, self.range = "fixed", self.num_bins, float(fixed_range)
        else:
            self.binning, size = "pow2", self.num_bins * int(oversample)
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
    def oversample(self) -> int:
        """Stored bins per calibration bin (1 for ``"fixed"``)."""
        return self.hist.size // self.num_bins

    @property
    def hist_width(self) -> float:
        """Width of one stored histogram bin (0.0 while the range is 0)."""
        return self.range / self.hist.size if self.hist.size else 0.0

    @property
    def bin_width(self) -> float:
        """Width of one calibration bin, ``absmax / num_bins`` (0.0 before any non-zero value)."""
        return self.absmax / self.num_bins

    @property
    def edges(self) -> np.ndarray:
        """The ``num_bins + 1`` edges of the calibration histogram, float64."""
        return np.arange(self.num_bins + 1, dtype=np.float64) * self.bin_width

    @property
    def is_exact(self) -> bool:
        """True when the stored histogram is the calibration histogram itself (no re-binning)."""
        return self.hist.size == self.num_bins and (self.range == self.absmax or self.count == 0)

    def calibration_histogram(self) -> np.ndarray:
        """``num_bins`` int64 counts of |x| over ``[0, absmax]`` (re-binned unless :attr:`is_exact`)."""
        if self.binning == "none":
            label = f"tensor {self.name!r}" if self.name else "these statistics"
            raise ValueError(f"{label} were collected without a histogram")
        if self.is_exact:
            return self.hist
        return rebin(self.hist, self.range, self.absmax, self.num_bins)

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
    ) -> TensorStats:
        """Build statistics from an existing |x| histogram over ``[0, hist_range]`` (e.g. a cache entry).

        ``num_bins`` (the calibration histogram size) defaults to ``len(hist)``; with ``binning="pow2"``,
        ``len(hist)`` must be a multiple of it.
        """
        counts = np.asarray(hist)
        if counts.ndim != 1 or counts.size < 2 or counts.size % 2:
            raise ValueError(f"histogram must be 1-D with an even number of bins, got shape {counts.shape}")
        if binning not in ("fixed", "pow2"):
            raise ValueError(f"binning must be 'fixed' or 'pow2', got {binning!r}")
        num_bins = counts.size if num_bins is None else int(num_bins)
        if binning == "fixed" and counts.size != num_bins:
            raise ValueError(f"a fixed histogram has num_bins bins: {counts.size} for num_bins {num_bins}")
        if counts.size % num_bins:
            raise ValueError(f"histogram of {counts.size} bins is not a multiple of num_bins {num_bins}")
        if np.any(counts < 0):
            raise ValueError("histogram counts must be non-negative")
        if not (hist_range >= 0 and math.isfinite(hist_range)):
            raise ValueError(f"histogram range must be finite and >= 0, got {hist_range!r}")
        stats = cls(num_bins, name=name, oversample=counts.size // num_bins,
                    fixed_range=hist_range if binning == "fixed" else None)
        stats.hist = counts.astype(np.int64, copy=True)
        stats.range = float(hist_range)
        stats.count = int(stats.hist.sum()) if count is None else int(count)
        if stats.count != int(stats.hist.sum()):
            raise ValueError(f"count {stats.count} differs from the histogram total {int(stats.hist.sum())}")
        if stats.count:
            stats.min, stats.max = float(min_value), float(max_value)
            if stats.absmax > stats.range:
                raise ValueError(f"absmax {stats.absmax!r} lies outside the histogram range {hist_range!r}")
        stats.nan_count = int(nan_count)
        stats.inf_count = int(inf_count)
        return stats

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
        if self.binning == "pow2" and peak >= self.range:
            self._grow(peak)
        if self.binning != "none":
            if self.range == 0.0:  # every value is 0
                self.hist[0] += data.size
            else:
                self._accumulate(data)
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
                self.name, self.nan_count, self.inf_count,
            )
            self._warned = True
        return data[finite]

    def _accumulate(self, data: np.ndarray) -> None:
        """Add ``min(floor(|v| * size / range), size - 1)`` of every (finite) value, block by block.

        Exact in real arithmetic for float32 values: a power-of-two scale multiplies exactly (float32 or
        float64); otherwise ``|v|`` is divided by the bin width ``range / size`` in float64, which is exact
        when ``size`` is a power of two (else ``|v| * size``, exact, is divided by ``range``). One rounding
        of the exact quotient cannot cross an integer: ``|v| * size - k * range`` is a non-zero multiple of a
        float32 ulp or zero, so a value on a bin edge lands in the upper bin, as in ``np.histogram``
        (multiplying by a rounded ``size / range`` would put some of them one bin lower).
        """
        size = self.hist.size
        scale = size / self.range
        pow2_scale = _is_pow2(scale) and 2.0**-100 <= scale <= 2.0**100
        exact32 = pow2_scale and data.dtype == np.float32
        pow2_size = _is_pow2(size)
        block = min(data.size, _CHUNK)
        magnitude = np.empty(block, dtype=data.dtype)
        index = np.empty(block, dtype=np.intp)
        wide = None if pow2_scale or pow2_size else np.empty(block, dtype=np.float64)
        # (a float64 scalar selects the float64 loop; a float32 one keeps float32)
        factor = np.float32(scale) if exact32 else np.float64(scale)
        hist = self.hist
        for start in range(0, data.size, block):
            part = data[start : start + block]
            mag, idx = magnitude[: part.size], index[: part.size]
            np.abs(part, out=mag)
            if pow2_scale:
                np.multiply(mag, factor, out=idx, casting="unsafe")
            elif pow2_size:
                np.divide(mag, np.float64(self.range / size), out=idx, casting="unsafe")
            else:
                product = wide[: part.size]
                np.multiply(mag, np.float64(size), out=product)
                np.divide(product, np.float64(self.range), out=idx, casting="unsafe")
            # |v| <= range, so the index is at most `size` (v == range): that extra bin is folded into the
            # last one, which replaces a clipping pass.
            counts = np.bincount(idx, minlength=size)
            hist += counts[:size]
            if counts.size > size:
                hist[-1] += counts[size:].sum()

    def _grow(self, peak: float) -> None:
        """Widen a pow2 range beyond ``peak``: set it if still 0, else double it and merge bin pairs."""
        if peak == 0.0:
            return
        if self.range == 0.0:
            self.range = pow2_above(peak)  # every earlier value was 0 and stays in bin 0
            return
        while self.range <= peak:
            self._merge_pairs()
            self.range *= 2.0

    def _merge_pairs(self) -> None:
        merged = np.zeros_like(self.hist)
        merged[: self.hist.size // 2] = self.hist.reshape(-1, 2).sum(axis=1)
        self.hist = merged

    def merge(self, other: TensorStats) -> None:
        """Add another tensor's statistics.

        Both must have the same binning and sizes; pow2 ranges may differ (by a power of two), fixed
        ranges must be equal.
        """
        if (other.num_bins, other.hist.size, other.binning) != (self.num_bins, self.hist.size, self.binning):
            raise ValueError(
                f"cannot merge {other.binning} statistics of {other.hist.size} bins into {self.binning} "
                f"statistics of {self.hist.size} bins"
            )
        if self.binning == "fixed" and other.range != self.range and other.count:
            raise ValueError(f"cannot merge fixed histograms over [0, {other.range}] and [0, {self.range}]")
        if other.count == 0:
            self.nan_count += other.nan_count
            self.inf_count += other.inf_count
            return
        incoming = other.copy()
        if self.binning == "pow2":
            target = max(self.range, incoming.range)
            for stats in (self, incoming):
                if stats.range == 0.0:
                    stats.range = target
                elif stats.range < target:
                    if not _is_pow2(target / stats.range):
                        raise ValueError("pow2 histograms to merge must have ranges a power of 2 apart")
                    while stats.range < target:
                        stats._merge_pairs()
                        stats.range *= 2.0
        self.hist += incoming.hist
        self.count += incoming.count
        self.nan_count += incoming.nan_count
        self.inf_count += incoming.inf_count
        self.min = min(self.min, incoming.min)
        self.max = max(self.max, incoming.max)


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

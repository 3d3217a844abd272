"""Streaming per-tensor statistics: extremes, counts and a histogram of |x| whose range grows.

Growth rule (documented in docs/calibration-cache.md as well):

* The histogram has ``num_bins`` equal bins over ``[0, range]``; a value ``v`` falls into bin
  ``min(floor(v * num_bins / range), num_bins - 1)``.
* ``range`` starts at 0 (every value seen so far was exactly 0 and is counted in bin 0). The first non-zero
  value sets ``range`` to the smallest power of two strictly greater than |value|.
* When a value >= ``range`` arrives, ``range`` is doubled as many times as needed and each doubling merges
  adjacent bin pairs (bin ``2k`` and ``2k + 1`` become bin ``k``). ``num_bins`` must be even, so old bins map
  exactly onto new ones: no count is ever split or approximated (floor(v / 2w) == floor(floor(v / w) / 2)).

Because the range is always ``2**k`` (the smallest power of two above the absolute maximum seen), the final
histogram does not depend on how the data was split into batches nor on their order: streaming gives exactly
the histogram that one pass over all the data would give. The price is resolution: the data's absolute
maximum lies in the upper half of the range, so the data covers between ``num_bins / 2 + 1`` and ``num_bins``
bins. Memory is ``num_bins`` int64 counters per tensor, whatever the number of samples.
"""

from __future__ import annotations

import logging
import math

import numpy as np

__all__ = ["DEFAULT_NUM_BINS", "TensorStats", "pow2_above"]

DEFAULT_NUM_BINS = 2048

logger = logging.getLogger(__name__)


def pow2_above(value: float) -> float:
    """Return the smallest power of two strictly greater than ``value`` (``value`` > 0)."""
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"pow2_above needs a finite positive value, got {value!r}")
    return math.ldexp(1.0, math.frexp(value)[1])  # value = m * 2**e with 0.5 <= m < 1, so value < 2**e


def _is_pow2(value: float) -> bool:
    return value > 0 and math.frexp(value)[0] == 0.5


class TensorStats:
    """Running statistics of one tensor: min, max, |x| histogram, finite/NaN/Inf counts.

    ``update`` skips NaN and +-Inf (counted in ``nan_count`` / ``inf_count``; a warning is logged once per
    tensor). ``min``, ``max``, ``count`` and the histogram cover finite values only.
    """

    __slots__ = (
        "name", "num_bins", "hist", "range", "count", "nan_count", "inf_count", "min", "max", "_warned",
    )

    def __init__(self, num_bins: int = DEFAULT_NUM_BINS, name: str = "") -> None:
        if not isinstance(num_bins, (int, np.integer)) or num_bins < 2 or num_bins % 2:
            raise ValueError(f"num_bins must be an even integer >= 2, got {num_bins!r}")
        self.name = name
        self.num_bins = int(num_bins)
        self.hist = np.zeros(self.num_bins, dtype=np.int64)
        self.range = 0.0
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
    def bin_width(self) -> float:
        """Width of one histogram bin (0.0 while the range is 0)."""
        return self.range / self.num_bins

    @property
    def edges(self) -> np.ndarray:
        """The ``num_bins + 1`` bin edges, float64."""
        return np.arange(self.num_bins + 1, dtype=np.float64) * self.bin_width

    def __repr__(self) -> str:
        return (
            f"TensorStats(name={self.name!r}, count={self.count}, min={self.min:.6g}, max={self.max:.6g}, "
            f"range={self.range:.6g}, num_bins={self.num_bins}, nan={self.nan_count}, inf={self.inf_count})"
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
    ) -> TensorStats:
        """Build statistics from an existing |x| histogram over ``[0, hist_range]`` (e.g. a cache entry)."""
        counts = np.asarray(hist)
        if counts.ndim != 1 or counts.size < 2 or counts.size % 2:
            raise ValueError(f"histogram must be 1-D with an even number of bins, got shape {counts.shape}")
        if np.any(counts < 0):
            raise ValueError("histogram counts must be non-negative")
        if not (hist_range >= 0 and math.isfinite(hist_range)):
            raise ValueError(f"histogram range must be finite and >= 0, got {hist_range!r}")
        stats = cls(counts.size, name=name)
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
        other = TensorStats(self.num_bins, self.name)
        other.hist = self.hist.copy()
        for attr in ("range", "count", "nan_count", "inf_count", "min", "max", "_warned"):
            setattr(other, attr, getattr(self, attr))
        return other

    # --------------------------------------------------------------- updating
    def update(self, values: np.ndarray) -> None:
        """Accumulate a batch of values (any shape); the array is not kept."""
        data = np.asarray(values)
        if data.size == 0:
            return
        if not np.issubdtype(data.dtype, np.floating):
            data = data.astype(np.float64)
        elif data.dtype.itemsize < 4:
            data = data.astype(np.float32)
        data = data.reshape(-1)
        finite = np.isfinite(data)
        if not finite.all():
            nans = int(np.count_nonzero(np.isnan(data)))
            self.nan_count += nans
            self.inf_count += int(data.size - np.count_nonzero(finite)) - nans
            if not self._warned:
                logger.warning(
                    "tensor %r holds NaN/Inf values; calibration skips them (so far %d NaN, %d Inf)",
                    self.name, self.nan_count, self.inf_count,
                )
                self._warned = True
            data = data[finite]
            if data.size == 0:
                return
        lo, hi = float(data.min()), float(data.max())
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += int(data.size)
        peak = max(-lo, hi)
        if peak >= self.range:
            self._grow(peak)
        if self.range == 0.0:
            self.hist[0] += data.size
            return
        self.hist += self._bin_counts(data)

    def _bin_counts(self, data: np.ndarray) -> np.ndarray:
        scale = self.num_bins / self.range
        # Scaling by a power of two is exact in float32 too; otherwise bin in float64.
        exact32 = data.dtype == np.float32 and _is_pow2(scale) and 2.0**-100 <= scale <= 2.0**100
        work = np.abs(data) if exact32 else np.abs(data, dtype=np.float64)
        work *= scale
        index = work.astype(np.intp)
        np.minimum(index, self.num_bins - 1, out=index)
        return np.bincount(index, minlength=self.num_bins)

    def _grow(self, peak: float) -> None:
        """Widen the range beyond ``peak``: set it if still 0, else double it and merge bin pairs."""
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
        merged[: self.num_bins // 2] = self.hist.reshape(-1, 2).sum(axis=1)
        self.hist = merged

    def merge(self, other: TensorStats) -> None:
        """Add another tensor's statistics (same ``num_bins``; ranges must differ by a power of two)."""
        if other.num_bins != self.num_bins:
            raise ValueError(f"cannot merge histograms of {self.num_bins} and {other.num_bins} bins")
        if other.count == 0:
            self.nan_count += other.nan_count
            self.inf_count += other.inf_count
            return
        incoming = other.copy()
        target = max(self.range, incoming.range)
        for stats in (self, incoming):
            if stats.range == 0.0:
                stats.range = target if target > 0 else 0.0
            elif stats.range < target:
                ratio = target / stats.range
                if not _is_pow2(ratio):
                    raise ValueError("cannot merge histograms whose ranges do not differ by a power of two")
                while stats.range < target:
                    stats._merge_pairs()
                    stats.range *= 2.0
        self.hist += incoming.hist
        self.count += incoming.count
        self.nan_count += incoming.nan_count
        self.inf_count += incoming.inf_count
        self.min = min(self.min, incoming.min)
        self.max = max(self.max, incoming.max)

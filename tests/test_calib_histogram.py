"""Statistics: grow binning (one pass), fixed (exact) binning, pair merging, NaN/Inf skipping."""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import numpy as np
import pytest

from qdq_compiler.calib.histogram import TensorStats, check_same_pass, collect_exact
from qdq_compiler.calib.methods import compute_amax

METHODS = ("max", "percentile", "percentile{p=99.9}", "entropy", "mse")


def _reference(first: np.ndarray, data: np.ndarray, base: float) -> np.ndarray:
    """The grow histogram of ``data`` (all batches, the first included) built at once with numpy.

    ``r`` = absmax of the first batch, width ``r / base``; ``[0, r]`` in ``base`` bins (``r`` itself in the
    last one, as ``np.histogram`` closes its last bin), then bins of the same width up to the one holding
    the absmax of all the data. (A fractional ``base``, after many merges: bins of width ``r / base`` from 0,
    ``r`` inside bin ``floor(base)``.)
    """
    absx = np.abs(np.asarray(data).astype(np.float64)).reshape(-1)
    r = float(np.abs(np.asarray(first).astype(np.float64)).max())
    absmax = float(absx.max())
    width = r / base
    if base != int(base):
        n = math.floor(absmax / width) + 1
        counts, _ = np.histogram(absx, bins=r * np.arange(n + 1, dtype=np.float64) / base)
        return counts.astype(np.int64)
    base = int(base)
    n = base if absmax <= r else math.floor(absmax / width) + 1
    low, _ = np.histogram(absx[absx <= r], bins=base, range=(0.0, r))
    high, _ = np.histogram(absx[absx > r], bins=r * np.arange(base, n + 1, dtype=np.float64) / base)
    return np.concatenate([low, high]).astype(np.int64)


def _exact_bins(values: np.ndarray, r: float, base: float, size: int) -> np.ndarray:
    """Counts of ``floor(|v| * base / r)`` in exact rational arithmetic (``r`` itself: bin ceil(base) - 1)."""
    scale = Fraction(base) / Fraction(r)
    index = [
        math.ceil(base) - 1 if v == r else math.floor(Fraction(v) * scale)
        for v in np.abs(values.astype(np.float64)).tolist()
    ]
    return np.bincount(np.array(index, dtype=np.int64), minlength=size)


def _pieces(rng: np.random.Generator, data: np.ndarray, count: int) -> list[np.ndarray]:
    """``data`` cut at random places into ``count`` batches, in random order."""
    cuts = np.sort(rng.choice(np.arange(1, data.size), size=count - 1, replace=False))
    pieces = np.split(data, cuts)
    return [pieces[i] for i in rng.permutation(len(pieces))]


def _grown(first: np.ndarray, batches: list[np.ndarray], num_bins: int, **kwargs) -> TensorStats:
    stats = TensorStats(num_bins, **kwargs)
    stats.update(first)
    for batch in batches:
        stats.update(batch)
    return stats


# --------------------------------------------------------------------------- grow binning by hand
def test_grow_by_hand():
    stats = TensorStats(num_bins=8, name="t")
    assert stats.binning == "grow" and stats.range == 0.0 and stats.hist_width == 0.0
    stats.update(np.array([0.0, 0.5, 1.0, 3.0, -4.0], dtype=np.float32))
    # range 4 (the first batch's absmax), width 0.5: 0 -> bin 0, 0.5 -> 1, 1.0 -> 2, 3.0 -> 6, 4.0 -> 7
    assert (stats.range, stats.base, stats.hist_width) == (4.0, 8, 0.5)
    assert stats.hist.tolist() == [1, 1, 1, 0, 0, 0, 1, 1]
    np.testing.assert_array_equal(stats.edges, np.arange(9) * 0.5)
    assert (stats.count, stats.min, stats.max, stats.absmax) == (5, -4.0, 3.0, 4.0)
    # Larger values append bins of width 0.5; 4.0 (the range) still goes to bin 7, 3.99 too,
    # 4.4 -> bin 8, 5.0 (an edge) -> bin 10, 6.1 -> bin 12: the histogram ends with the absmax's bin.
    stats.update(np.array([4.0, 4.4, 5.0, -6.1, 3.99], dtype=np.float32))
    assert (stats.range, stats.base, stats.hist_width) == (4.0, 8, 0.5)
    assert stats.hist.tolist() == [1, 1, 1, 0, 0, 0, 1, 3, 1, 0, 1, 0, 1]
    assert stats.edges.size == 14 and stats.edges[-1] == 6.5 and stats.hist.size <= stats.max_bins == 256
    # After the growth the value `range` keeps going to bin base - 1, not to bin base.
    stats.update(np.array([-4.0, 4.0], dtype=np.float32))
    assert stats.hist[7] == 5 and stats.hist[8] == 1
    # An absmax on an edge opens the bin above it.
    stats.update(np.array([6.5], dtype=np.float32))
    assert stats.hist.tolist() == [1, 1, 1, 0, 0, 0, 1, 5, 1, 0, 1, 0, 1, 1]
    assert stats.count == 13 and stats.absmax == 6.5
    assert stats.calibration_histogram() is stats.hist


def test_grow_zeros_before_first_nonzero():
    stats = TensorStats(num_bins=8)
    stats.update(np.zeros(10, dtype=np.float32))
    assert (stats.range, stats.absmax, stats.hist_width) == (0.0, 0.0, 0.0)
    assert stats.hist.tolist() == [10, 0, 0, 0, 0, 0, 0, 0] and not stats.edges.any()
    stats.update(np.zeros(3, dtype=np.float32))
    # The first non-zero batch fixes the range: 0.75, width 0.09375 (3/32); 0.375 -> bin 4, 0.75 -> bin 7.
    stats.update(np.array([0.375, -0.75, 0.0], dtype=np.float32))
    assert (stats.range, stats.base, stats.hist_width) == (0.75, 8, 0.09375)
    assert stats.hist.tolist() == [14, 0, 0, 0, 1, 0, 0, 1]  # the earlier zeros stay in bin 0
    stats.update(np.array([0.0, 1.5], dtype=np.float32))  # 1.5 = 16 widths: bin 16
    assert stats.hist.tolist() == [15, 0, 0, 0, 1, 0, 0, 1] + [0] * 8 + [1]
    assert stats.count == 18


def test_grow_values_on_edges_go_up():
    """After a first batch fixing ``range``, ``|v| == k * range / 2048`` lands in bin k (k < 4096), except
    ``range`` itself (bin 2047), for every float32 value that sits exactly on an edge."""
    rng = np.random.default_rng(4)
    full = rng.uniform(0.1, 50.0, 20).astype(np.float32)  # 24-bit significands: a few edges are float32
    short = rng.integers(2**11, 2**12, 20) * 2.0 ** -rng.integers(4, 12, 20)  # 12 bits: every edge is
    appended = 0
    for r in np.concatenate([full, short.astype(np.float32)]):
        k = np.arange(1, 2 * 2048)
        edges = k * (np.float64(r) / 2048)  # exact: r has 24 bits, k 12
        on_edge = edges.astype(np.float32).astype(np.float64) == edges
        stats = TensorStats(2048)
        stats.update(np.array([-r], dtype=np.float32))
        stats.update(edges[on_edge].astype(np.float32) * rng.choice([-1, 1], size=int(on_edge.sum())))
        expected_bins = np.where(k[on_edge] == 2048, 2047, k[on_edge])
        expected = np.bincount(np.append(expected_bins, 2047), minlength=2048)
        np.testing.assert_array_equal(stats.hist, expected)
        appended += int(np.count_nonzero(k[on_edge] > 2048))
    assert appended > 20 * 2047


# --------------------------------------------------------------------------- grow binning at scale
def _distribution(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    data = {
        "normal": lambda: rng.standard_normal(n),
        "laplace": lambda: rng.laplace(size=n) * 3.0,
        "relu": lambda: np.maximum(rng.standard_normal(n), 0.0),
        "lognormal": lambda: rng.lognormal(0.0, 1.5, size=n),
        # magnitudes rising along the data: the histogram grows by many bins after the first batch
        "growing": lambda: rng.standard_normal(n) * np.logspace(-0.5, 0.5, n),
        # the first batch's absmax is a power of two (another binning path), later values exceed it
        "pow2 range": lambda: np.concatenate([[-2.0], rng.standard_normal(n - 1) * 0.9]),
    }[name]()
    return data.astype(np.float32)


@pytest.mark.parametrize("num_bins", [2048, 1000])
@pytest.mark.parametrize("dist", ["normal", "laplace", "relu", "lognormal", "growing", "pow2 range"])
def test_streaming_equals_single_histogram(dist, num_bins):
    rng = np.random.default_rng(7)
    data = _distribution(dist, rng, 60_000)
    first, rest = data[:1000], data[1000:]
    reference = _reference(first, data, num_bins)
    assert reference.size > num_bins  # the later data do grow the histogram
    batchings = {
        "one batch": [rest],
        "in order": np.split(rest, np.sort(rng.choice(np.arange(1, rest.size), 36, replace=False))),
        "shuffled pieces": _pieces(rng, rest, 37),
        "shuffled values": _pieces(rng, rng.permutation(rest), 11),
    }
    results = {}
    for label, batches in batchings.items():
        stats = _grown(first, batches, num_bins)
        np.testing.assert_array_equal(stats.hist, reference, err_msg=label)
        assert stats.range == float(np.abs(first).max()) and stats.base == num_bins
        assert stats.hist_width == stats.range / num_bins
        assert stats.count == data.size and stats.absmax == float(np.abs(data).max())
        assert stats.edges[-2] <= stats.absmax < stats.edges[-1]
        results[label] = stats
    expected = {method: compute_amax(results["in order"], method) for method in METHODS}
    assert expected["max"] == float(np.abs(data).max())
    for label in ("one batch", "shuffled values"):
        assert {method: compute_amax(results[label], method) for method in METHODS} == expected, label


def test_grow_first_batch_decides():
    """The same data with another first batch gives another (equally valid) histogram."""
    data = np.array([0.5, 1.0, 3.0, 4.0], dtype=np.float32)
    small_first, large_first = TensorStats(4), TensorStats(4)
    for batch in (data[:2], data[2:]):
        small_first.update(batch)
    for batch in (data[2:], data[:2]):
        large_first.update(batch)
    assert small_first.range == 1.0 and small_first.hist.tolist() == [0, 0, 1, 1] + [0] * 8 + [1, 0, 0, 0, 1]
    assert large_first.range == 4.0 and large_first.hist.tolist() == [1, 1, 0, 2]


# --------------------------------------------------------------------------- max_bins: pair merging
def test_max_bins_merges_pairs_by_hand():
    stats = TensorStats(num_bins=8, max_bins=16)
    stats.update(np.array([1.0, 0.1, -0.3], dtype=np.float32))  # range 1, width 1/8
    assert stats.hist.tolist() == [1, 0, 1, 0, 0, 0, 0, 1]
    stats.update(np.array([1.5], dtype=np.float32))  # 13 bins <= 16: no merge yet
    assert stats.base == 8 and stats.hist.size == 13
    # 5.0 needs 41 bins of 1/8: merge to width 1/4 (21 bins), then 1/2 (11 bins)
    stats.update(np.array([5.0, -1.0, 1.1], dtype=np.float32))
    assert (stats.range, stats.base, stats.hist_width) == (1.0, 2, 0.5)
    # 0.1, 0.3 -> bin 0; 1.0 (twice, the range) -> bin base - 1 = 1; 1.1 -> bin 2; 1.5 -> 3; 5.0 -> 10
    assert stats.hist.tolist() == [2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    stats.update(np.array([1.0, 7.9], dtype=np.float32))  # 16 bins: still within max_bins
    assert stats.base == 2 and stats.hist.tolist() == [2, 3, 1, 1] + [0] * 6 + [1] + [0] * 4 + [1]
    assert stats.hist.size <= stats.max_bins


@pytest.mark.parametrize(
    ("num_bins", "max_bins", "growth"),
    [
        (64, 1024, 100.0),
        (2048, 2048 * 4, 30.0),
        (1000, 4000, 9.0),
        (1000, 1000, 30.0),
        (8, 8, 3.0),
        (4, 4, 1e4),
    ],
)
def test_max_bins_equals_reference_at_doubled_width(num_bins, max_bins, growth):
    rng = np.random.default_rng(num_bins)
    first = rng.standard_normal(2000).astype(np.float32)
    later = (rng.standard_normal(40_000) * np.logspace(0, np.log10(growth), 40_000)).astype(np.float32)
    data = np.concatenate([first, later])
    r, absmax = float(np.abs(first).max()), float(np.abs(data).max())
    # the expected base: halve num_bins until the bins of width r / base up to absmax fit into max_bins
    base = num_bins
    while math.floor(absmax / (r / base)) + 1 > max_bins:
        base /= 2  # (past an odd base, base turns fractional)
    assert base < num_bins  # the case does merge
    reference = _reference(first, data, base)
    ascending = later[np.argsort(np.abs(later), kind="stable")]  # the histogram grows (and merges) often
    for batches in ([later], _pieces(rng, later, 50), np.array_split(ascending, 300)):
        stats = _grown(first, batches, num_bins, max_bins=max_bins)
        assert (stats.range, stats.base, stats.hist_width) == (r, base, r / base)
        np.testing.assert_array_equal(stats.hist, reference)
        assert stats.hist.size <= max_bins


def test_one_large_batch_binned_block_by_block_equals_reference():
    """A batch larger than a block, after the first: each block grows (and merges) on its own; NaN skipped."""
    from qdq_compiler.calib.histogram import _CHUNK

    rng = np.random.default_rng(5)
    first = rng.standard_normal(3000).astype(np.float32)
    later = np.sort(np.abs(rng.standard_normal(2 * _CHUNK + 1234) * np.logspace(0, 3, 2 * _CHUNK + 1234)))
    later = (later * rng.choice([-1.0, 1.0], later.size)).astype(np.float32)  # blocks grow in turn
    holes = later.copy()
    holes[[7, _CHUNK + 3, _CHUNK + 4]] = [np.nan, np.inf, -np.inf]
    stats = _grown(first, [holes], 256, max_bins=1024)
    finite = np.concatenate([first, np.delete(later, [7, _CHUNK + 3, _CHUNK + 4])])
    assert stats.base < 256  # merged while the batch was binned
    np.testing.assert_array_equal(stats.hist, _reference(first, finite, stats.base))
    assert (stats.nan_count, stats.inf_count, stats.count) == (1, 2, finite.size)
    assert (stats.min, stats.max) == (float(finite.min()), float(finite.max()))
    pieces = _grown(
        first, np.array_split(np.delete(later, [7, _CHUNK + 3, _CHUNK + 4]), 97), 256, max_bins=1024
    )
    np.testing.assert_array_equal(stats.hist, pieces.hist)
    assert stats.base == pieces.base


def test_memory_bounded_by_max_bins():
    rng = np.random.default_rng(9)
    for trial in range(40):
        num_bins = int(rng.choice([2, 8, 16, 256]))
        stats = TensorStats(num_bins)
        assert stats.max_bins == 32 * num_bins
        stats.update(rng.standard_normal(100).astype(np.float32) * 10.0 ** rng.uniform(-6, 6))
        sizes = []
        for _ in range(30):  # magnitudes growing up to 2 * num_bins times, samples far beyond max_bins
            scale = stats.range * float(rng.uniform(0, 2 * num_bins))
            stats.update((rng.standard_normal(int(rng.integers(1, 3000))) * scale).astype(np.float32))
            sizes.append(stats.hist.size)
        assert max(sizes) <= stats.max_bins, trial
        assert stats.count > stats.max_bins and int(stats.hist.sum()) == stats.count
    default = TensorStats()
    default.update(np.array([1.0], dtype=np.float32))
    for _ in range(20):
        default.update(np.full(50_000, 60_000.0, dtype=np.float32))  # 60000 x the first range
    assert default.base == 1 and default.hist.size == 60_001 <= default.max_bins == 32 * 2048


@pytest.mark.parametrize(("num_bins", "later"), [(2, 1e3), (1000, 300.0), (8, 1e30), (6, 7.0)])
def test_memory_bounded_by_max_bins_for_any_growth(num_bins, later):
    """Past base 1 (or an odd base) merging goes on: base turns fractional, the bins stay within max_bins."""
    max_bins = max(4, num_bins)
    stats = TensorStats(num_bins, max_bins=max_bins)
    stats.update(np.array([1.0, 0.25], dtype=np.float32))
    stats.update(np.array([later, -1.0], dtype=np.float32))
    base = num_bins
    while math.floor(later * base) + 1 > max_bins:
        base /= 2
    assert stats.base == base and stats.hist.size == math.floor(later * base) + 1 <= max_bins
    values = np.array([1.0, 0.25, later, -1.0], dtype=np.float32)
    np.testing.assert_array_equal(stats.hist, _exact_bins(values, 1.0, base, stats.hist.size))
    assert stats.count == 4


def test_memory_bounded_for_random_growth():
    """Magnitudes up to 1e12 times the first batch's, any even num_bins: within max_bins, exact counts."""
    rng = np.random.default_rng(9)
    bases = set()
    for trial in range(24):
        num_bins = int(rng.choice([2, 6, 8, 16, 1000]))
        max_bins = int(rng.choice([num_bins, 4 * num_bins, 32 * num_bins]))
        stats = TensorStats(num_bins, max_bins=max_bins)
        assert TensorStats(num_bins).max_bins == 32 * num_bins
        first = rng.standard_normal(50) * 10.0 ** rng.uniform(-6, 6)
        batches = [first.astype(np.float32)]
        top = float(rng.choice([1.0, 3.0, 12.0]))  # growth up to 10**top
        for _ in range(20):
            later = rng.standard_normal(int(rng.integers(1, 100))) * np.abs(first).max()
            batches.append((later * 10.0 ** rng.uniform(-3, top)).astype(np.float32))
        sizes = []
        for batch in batches:
            stats.update(batch)
            sizes.append(stats.hist.size)
        assert max(sizes) <= max_bins, trial
        values = np.concatenate(batches)
        r = float(np.abs(batches[0]).max())
        np.testing.assert_array_equal(stats.hist, _exact_bins(values, r, stats.base, stats.hist.size))
        assert stats.count == values.size and stats.range == r
        # base = num_bins / 2**k, the largest such that the absmax's bin fits
        needed = [math.floor(stats.absmax * b / r) + 1 for b in (stats.base, 2 * stats.base)]
        assert needed[0] <= max_bins and (stats.base == num_bins or needed[1] > max_bins)
        assert stats.base * 2 ** round(math.log2(num_bins / stats.base)) == num_bins
        bases.add(stats.base)
    assert min(bases) < 1 and len(bases) > 10  # the cases do reach a fractional base


# --------------------------------------------------------------------------- merge
def test_merge_matches_single_update():
    rng = np.random.default_rng(3)
    first = rng.standard_normal(500).astype(np.float32)
    a = rng.standard_normal(5000).astype(np.float32)
    b = (rng.standard_normal(7000) * 4).astype(np.float32)  # grows further than a
    left, right, both = TensorStats(), TensorStats(), TensorStats()
    plan = {"left": [first, a], "right": [first, b[:3000], b[3000:]], "both": [first, a, first, b]}
    for stats, batches in zip((left, right, both), plan.values()):
        for batch in batches:
            stats.update(batch)
    assert left.hist.size < right.hist.size
    left.merge(right)
    np.testing.assert_array_equal(left.hist, both.hist)
    np.testing.assert_array_equal(left.hist, _reference(first, np.concatenate([first, a, first, b]), 2048))
    attrs = ("range", "base", "count", "min", "max", "nan_count", "inf_count")
    assert [getattr(left, x) for x in attrs] == [getattr(both, x) for x in attrs]
    # into empty statistics, and zeros-only statistics (range 0) merged either way
    empty = TensorStats()
    empty.merge(both)
    np.testing.assert_array_equal(empty.hist, both.hist)
    assert (empty.range, empty.base, empty.count) == (both.range, both.base, both.count)
    zeros = TensorStats()
    zeros.update(np.zeros(7, dtype=np.float32))
    zeros.merge(both)
    assert (zeros.range, zeros.count) == (both.range, both.count + 7)
    assert zeros.hist[0] == both.hist[0] + 7 and (zeros.hist[1:] == both.hist[1:]).all()
    again = both.copy()
    again.merge(TensorStats())
    np.testing.assert_array_equal(again.hist, both.hist)


def test_merge_rules():
    a, b = TensorStats(8, fixed_range=2.0), TensorStats(8, fixed_range=2.0)
    a.update(np.array([0.1, 1.9]))
    b.update(np.array([2.0]))
    a.merge(b)
    assert a.hist.tolist() == [1, 0, 0, 0, 0, 0, 0, 2] and a.count == 3
    c = TensorStats(8, fixed_range=4.0)
    c.update(np.array([3.0]))
    with pytest.raises(
        ValueError,
        match=r"cannot merge fixed statistics over \[0, 4\.0\] in 8 bins into "
        r"fixed statistics over \[0, 2\.0\] in 8 bins",
    ):
        a.merge(c)
    with pytest.raises(ValueError, match="cannot merge grow statistics"):
        a.merge(TensorStats(8))
    grow1, grow2, grow3 = TensorStats(8), TensorStats(8), TensorStats(16)
    grow1.update(np.array([1.0, 0.5]))
    grow2.update(np.array([2.0, 0.5]))  # another first batch: another range
    grow3.update(np.array([1.0]))
    for other in (grow2, grow3, c, TensorStats(8, histogram=False)):
        with pytest.raises(ValueError, match="cannot merge"):
            grow1.merge(other)
    merged = TensorStats(8, max_bins=8)
    merged.update(np.array([1.0]))
    merged.update(np.array([1.5]))  # 13 bins > 8: base 4
    assert merged.base == 4
    # refused merges change nothing
    assert grow1.count == 2 and grow1.hist.tolist() == [0, 0, 0, 0, 1, 0, 0, 1]
    # the same first range, pairs merged a different number of times: the finer is coarsened (exact), and
    # the result is the one pass over both batches
    coarsened = grow1.copy()
    coarsened.merge(merged)
    one_pass = TensorStats(8, max_bins=8)
    one_pass.update(np.array([1.0, 0.5]))
    one_pass.update(np.array([1.0, 1.5]))
    assert coarsened.hist.tolist() == one_pass.hist.tolist() == [0, 0, 1, 2, 0, 0, 1]
    assert (coarsened.base, coarsened.count) == (one_pass.base, one_pass.count) == (4, 4)
    counts_only = TensorStats(8, histogram=False)
    other = TensorStats(8, histogram=False)
    other.update(np.array([np.nan, -3.0]))
    counts_only.merge(other)
    assert (counts_only.count, counts_only.nan_count, counts_only.min) == (1, 1, -3.0)
    assert counts_only.hist.size == 0


def test_merge_into_empty_fixed_statistics_checks_the_range():
    empty, other = TensorStats(8, fixed_range=2.0), TensorStats(8, fixed_range=4.0)
    other.update(np.array([3.9]))
    with pytest.raises(ValueError, match="cannot merge"):
        empty.merge(other)


# --------------------------------------------------------------------------- NaN/Inf, magnitudes, dtypes
def test_nan_inf_skipped_and_counted(caplog):
    stats = TensorStats(num_bins=8, name="act")
    with caplog.at_level(logging.WARNING, logger="qdq_compiler.calib.histogram"):
        stats.update(np.array([1.0, np.nan, np.inf, -np.inf, -2.0], dtype=np.float32))
        stats.update(np.array([np.nan, 0.5], dtype=np.float32))
        stats.update(np.array([np.nan, np.nan]))  # nothing finite: only counters move
    assert (stats.count, stats.nan_count, stats.inf_count) == (3, 4, 2)
    assert (stats.min, stats.max) == (-2.0, 1.0)
    assert stats.range == 2.0 and stats.hist.tolist() == [0, 0, 1, 0, 1, 0, 0, 1]
    warnings = [r for r in caplog.records if "NaN/Inf" in r.getMessage()]
    assert len(warnings) == 1 and "act" in warnings[0].getMessage()


def test_extreme_magnitudes():
    for value in (1e-42, 1e-35, 3e38):  # float32 denormal, tiny normal, near float32 max
        values = np.array([value, value / 2, value / 3, 0.0], np.float32)
        stats = TensorStats()
        stats.update(values)
        expected, _ = np.histogram(
            np.abs(values.astype(np.float64)), bins=2048, range=(0.0, float(values[0]))
        )
        np.testing.assert_array_equal(stats.hist, expected)
        assert stats.range == stats.absmax == float(values[0])
        if value < 1e38:  # and growing by 40 %
            larger = values * np.float32(1.4)
            stats.update(larger)
            expected = _reference(values, np.concatenate([values, larger]), 2048)
            np.testing.assert_array_equal(stats.hist, expected)


def test_dtypes():
    stats = TensorStats(num_bins=16)
    stats.update(np.array([1, -3], dtype=np.int32))  # range 3, width 3/16
    stats.update(np.array([0.25], dtype=np.float16))
    for _ in range(50):
        stats.update(np.ones((4, 4), dtype=np.float32))
    assert stats.hist.shape == (16,) and stats.count == 3 + 800 and stats.absmax == 3.0
    assert (stats.hist[1], stats.hist[5], stats.hist[15]) == (1, 801, 1)  # 0.25 -> 1, 1 -> 5, 3 -> 15
    stats.update(np.array([4.5], dtype=np.float64))  # 24 widths
    assert stats.hist.size == 25 and stats.hist[24] == 1 and stats.range == 3.0
    stats.update(np.array([], dtype=np.float32))
    assert stats.count == 804


def test_histogram_free_statistics():
    stats = TensorStats(8, "t", histogram=False)
    stats.update(np.array([1.0, -2.0, np.inf]))
    assert (stats.binning, stats.hist.size) == ("none", 0)
    assert (stats.count, stats.absmax, stats.inf_count) == (2, 2.0, 1)
    with pytest.raises(ValueError, match="tensor 't' were collected without a histogram"):
        stats.calibration_histogram()


def test_from_histogram_validation():
    with pytest.raises(ValueError, match="even"):
        TensorStats.from_histogram(np.ones(5, dtype=np.int64), 1.0, min_value=0.0, max_value=1.0)
    with pytest.raises(ValueError, match="outside"):
        TensorStats.from_histogram(np.ones(4, dtype=np.int64), 1.0, min_value=0.0, max_value=2.0)
    with pytest.raises(ValueError, match="count"):
        TensorStats.from_histogram(np.ones(4, dtype=np.int64), 1.0, min_value=0.0, max_value=1.0, count=3)
    with pytest.raises(ValueError, match="non-negative"):
        TensorStats.from_histogram(np.array([1, -1]), 1.0, min_value=0.0, max_value=1.0)
    with pytest.raises(ValueError, match="binning must be"):
        TensorStats.from_histogram(
            np.ones(4, dtype=np.int64), 1.0, min_value=0.0, max_value=1.0, binning="pow2"
        )
    with pytest.raises(ValueError, match="cannot have base 3"):
        TensorStats.from_histogram(
            np.ones(8, dtype=np.int64), 1.0, min_value=0.0, max_value=1.0, num_bins=4, binning="grow", base=3
        )
    with pytest.raises(ValueError, match="num_bins"):
        TensorStats(num_bins=7)
    with pytest.raises(ValueError, match="below num_bins"):
        TensorStats(num_bins=8, max_bins=4)
    # a grow histogram round-trips (as the cache stores it) and keeps growing and merging the same way
    stats = TensorStats(8)  # max_bins 256
    stats.update(np.array([1.0, -0.2], dtype=np.float32))
    stats.update(np.array([40.0], dtype=np.float32))  # 321 bins of 1/8 > 256: base 4
    again = TensorStats.from_histogram(
        stats.hist,
        stats.range,
        min_value=stats.min,
        max_value=stats.max,
        num_bins=8,
        binning="grow",
        base=stats.base,
    )
    np.testing.assert_array_equal(again.hist, stats.hist)
    assert (again.binning, again.range, again.base, again.count, again.hist_width, again.max_bins) == (
        "grow",
        1.0,
        4,
        3,
        0.25,
        256,
    )
    for batch in ([1.0, 50.6], [80.0, -0.5]):  # 203 bins; then 321 > 256: base 2
        again.update(np.array(batch, dtype=np.float32))
        stats.update(np.array(batch, dtype=np.float32))
        np.testing.assert_array_equal(again.hist, stats.hist)
    assert again.base == 2
    with pytest.raises(ValueError, match="outside"):  # absmax beyond the last grown bin
        TensorStats.from_histogram(
            stats.hist,
            1.0,
            min_value=0.0,
            max_value=float(stats.edges[-1]) + 0.1,
            num_bins=8,
            binning="grow",
            base=2,
        )


def test_from_histogram_refuses_grow_histogram_shorter_than_base():
    with pytest.raises(ValueError, match="cannot have base"):
        TensorStats.from_histogram(
            np.ones(4, dtype=np.int64), 1.0, min_value=0.0, max_value=0.4, num_bins=8, binning="grow", base=8
        )


# --------------------------------------------------------------------------- fixed binning
def test_fixed_range_by_hand():
    # 8 bins over [0, 4] (width 0.5); 4.0 itself goes to the last bin
    stats = TensorStats(num_bins=8, fixed_range=4.0, name="t")
    stats.update(np.array([0.0, 0.49, 0.5, -1.0, 3.99, 4.0, -4.0], dtype=np.float32))
    assert stats.binning == "fixed" and stats.base == 8
    assert stats.hist.tolist() == [2, 1, 1, 0, 0, 0, 0, 3]
    np.testing.assert_array_equal(stats.calibration_histogram(), stats.hist)
    assert stats.hist_width == 0.5 and stats.edges[-1] == 4.0 and stats.edges.size == 9
    with pytest.raises(ValueError, match=r"tensor 't': \|x\| = 4\.5 exceeds the fixed histogram range 4\.0"):
        stats.update(np.array([1.0, 4.5]))
    assert stats.count == 7  # the refused batch counts nothing
    zeros = TensorStats(num_bins=8, fixed_range=0.0)
    zeros.update(np.zeros(5))
    assert zeros.hist[0] == 5
    with pytest.raises(ValueError, match="exceeds"):
        zeros.update(np.array([1e-30]))
    with pytest.raises(ValueError, match="fixed_range"):
        TensorStats(8, fixed_range=math.inf)


@pytest.mark.parametrize("num_bins", [2048, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_fixed_range_matches_numpy(dtype, num_bins):
    rng = np.random.default_rng(11)
    data = (rng.standard_normal(300_001) * 7.3).astype(dtype)
    absx = np.abs(data.astype(np.float64))
    absmax = float(absx.max())
    pieces = [data[:1000], data[1000:200_000], data[200_000:]]
    stats = collect_exact(pieces, num_bins=num_bins, name="x")
    expected, _ = np.histogram(absx, bins=num_bins, range=(0.0, absmax))
    np.testing.assert_array_equal(stats.hist, expected)
    assert stats.absmax == absmax and stats.count == data.size and stats.binning == "fixed"
    assert stats.range == absmax and stats.hist.size == num_bins


def test_values_on_bin_edges_go_up():
    """|v| == k * absmax / num_bins lands in bin k, for every float32 value that sits exactly on an edge.

    (Multiplying by a rounded num_bins / absmax would put about one in ten of them into bin k - 1.)
    """
    rng = np.random.default_rng(2)
    for absmax in rng.uniform(0.1, 50.0, 40).astype(np.float32):
        k = np.arange(1, 2048)
        edges = k * (np.float64(absmax) / 2048)  # exact: absmax has 24 bits, k 11
        on_edge = edges.astype(np.float32).astype(np.float64) == edges
        values = np.concatenate([edges[on_edge], [absmax]]).astype(np.float32)
        stats = TensorStats(2048, fixed_range=float(absmax))
        stats.update(values)
        expected = np.bincount(np.append(k[on_edge], 2047), minlength=2048)
        np.testing.assert_array_equal(stats.hist, expected)


def test_collect_exact_needs_two_passes():
    with pytest.raises(ValueError, match="one-shot iterator"):
        collect_exact(iter([np.ones(3)]))
    first = TensorStats(8, "t", histogram=False)
    first.update(np.array([1.0, -2.0]))
    second = TensorStats(8, "t", fixed_range=2.0)
    second.update(np.array([1.0, -1.5]))
    with pytest.raises(ValueError, match="'t' differs between the two calibration passes"):
        check_same_pass(first, second)
    with pytest.raises(ValueError, match="without a histogram"):
        first.calibration_histogram()
    same = TensorStats(8, "t", fixed_range=2.0)
    same.update(np.array([-2.0, 1.0]))
    check_same_pass(first, same)

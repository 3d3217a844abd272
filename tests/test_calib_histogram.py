"""Statistics: pow2 binning with exact range growth, fixed (exact) binning, re-binning, NaN/Inf skipping."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from qdq_compiler.calib.histogram import TensorStats, check_same_pass, collect_exact, pow2_above, rebin
from qdq_compiler.calib.methods import compute_amax


def test_pow2_above():
    assert pow2_above(1.0) == 2.0  # strictly above
    assert pow2_above(3.0) == 4.0
    assert pow2_above(0.3) == 0.5
    assert pow2_above(0.25) == 0.5
    assert pow2_above(1e-30) == 2.0 ** -99  # 2**-100 < 1e-30 < 2**-99
    with pytest.raises(ValueError):
        pow2_above(0.0)


def test_update_by_hand():
    stats = TensorStats(num_bins=8, name="t", oversample=1)  # pow2 binning, stored bins = calibration bins
    stats.update(np.array([0.0, 0.5, 1.0, 3.0, -3.9], dtype=np.float32))
    # absmax 3.9 -> range 4 (smallest power of two above), width 0.5:
    # |x| = 0 -> bin 0, 0.5 -> 1, 1.0 -> 2, 3.0 -> 6, 3.9 -> 7
    assert stats.range == 4.0
    assert stats.hist.tolist() == [1, 1, 1, 0, 0, 0, 1, 1]
    assert stats.count == 5
    assert stats.min == pytest.approx(-3.9)
    assert stats.max == 3.0
    assert stats.absmax == pytest.approx(3.9)
    # 4.0 arrives: the range must exceed 4 -> 8, one doubling merges pairs -> [2, 1, 0, 2, 0, 0, 0, 0],
    # then 4.0 (width 1) lands in bin 4.
    stats.update(np.array([4.0]))
    assert stats.range == 8.0
    assert stats.hist.tolist() == [2, 1, 0, 2, 1, 0, 0, 0]
    # Binning everything at once over [0, 8) gives the same: 0,.5->0; 1->1; 3,3.9->3; 4->4.
    once = TensorStats(num_bins=8, oversample=1)
    once.update(np.array([0.0, 0.5, 1.0, 3.0, -3.9, 4.0]))
    assert once.hist.tolist() == stats.hist.tolist()


def test_zeros_then_values():
    stats = TensorStats(num_bins=8, oversample=1)
    stats.update(np.zeros(10, dtype=np.float32))
    assert stats.range == 0.0 and stats.hist[0] == 10 and stats.absmax == 0.0
    stats.update(np.array([0.3], dtype=np.float32))
    # range 0.5, width 1/16: 0.3 * 16 = 4.8 -> bin 4; the zeros stay in bin 0
    assert stats.range == 0.5
    assert stats.hist.tolist() == [10, 0, 0, 0, 1, 0, 0, 0]


def _batches(rng, data, pieces):
    cuts = np.sort(rng.choice(np.arange(1, data.size), size=pieces - 1, replace=False))
    return np.split(data, cuts)


@pytest.mark.parametrize("dist", ["normal", "laplace", "relu", "lognormal", "growing"])
def test_streaming_equals_single_histogram(dist):
    rng = np.random.default_rng(7)
    n = 60_000
    data = {
        "normal": lambda: rng.standard_normal(n),
        "laplace": lambda: rng.laplace(size=n) * 3.0,
        "relu": lambda: np.maximum(rng.standard_normal(n), 0.0),
        "lognormal": lambda: rng.lognormal(0.0, 1.5, size=n),
        # magnitudes rising over six orders: the range doubles many times while streaming
        "growing": lambda: rng.standard_normal(n) * np.logspace(-3, 3, n),
    }[dist]().astype(np.float32)
    streamed = TensorStats(num_bins=2048)
    for piece in _batches(rng, data, 37):
        streamed.update(piece)
    whole = TensorStats(num_bins=2048)
    whole.update(data)
    shuffled = TensorStats(num_bins=2048)
    for piece in _batches(rng, rng.permutation(data), 11):
        shuffled.update(piece)
    assert streamed.hist.size == 2048 * 16
    for other in (whole, shuffled):
        np.testing.assert_array_equal(streamed.hist, other.hist)
        assert streamed.range == other.range and streamed.count == other.count
    # The growth rule is exact: numpy's own binning over the final range agrees count for count.
    reference, _ = np.histogram(np.abs(data.astype(np.float64)), bins=streamed.hist.size,
                                range=(0.0, streamed.range))
    np.testing.assert_array_equal(streamed.hist, reference)
    for method in ("max", "percentile", "percentile{p=99.9}", "entropy", "mse"):
        assert compute_amax(streamed, method) == compute_amax(whole, method)
    # Max is exact; the percentile lies within one stored bin (1/16 of a calibration bin) above the
    # nearest-rank value of all the data.
    absmax = float(np.abs(data).max())
    assert compute_amax(streamed, "max") == absmax
    ordered = np.sort(np.abs(data.astype(np.float64)))
    for p in (99.0, 99.9, 99.99):
        nearest_rank = ordered[int(np.ceil(round(p * n / 100, 9))) - 1]
        assert 0 <= compute_amax(streamed, "percentile", p=p) - nearest_rank <= streamed.hist_width


def test_merge_matches_single_update():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(5000).astype(np.float32)
    b = (rng.standard_normal(7000) * 40).astype(np.float32)
    left, right, both = TensorStats(), TensorStats(), TensorStats()
    left.update(a)
    right.update(b)
    both.update(np.concatenate([a, b]))
    left.merge(right)
    np.testing.assert_array_equal(left.hist, both.hist)
    assert (left.range, left.count, left.min, left.max) == (both.range, both.count, both.min, both.max)


def test_nan_inf_skipped_and_counted(caplog):
    stats = TensorStats(num_bins=8, name="act")
    with caplog.at_level(logging.WARNING, logger="qdq_compiler.calib.histogram"):
        stats.update(np.array([1.0, np.nan, np.inf, -np.inf, -2.0], dtype=np.float32))
        stats.update(np.array([np.nan, 0.5], dtype=np.float32))
        stats.update(np.array([np.nan, np.nan]))  # nothing finite: only counters move
    assert (stats.count, stats.nan_count, stats.inf_count) == (3, 4, 2)
    assert (stats.min, stats.max) == (-2.0, 1.0)
    assert stats.range == 4.0 and int(stats.hist.sum()) == 3
    warnings = [r for r in caplog.records if "NaN/Inf" in r.getMessage()]
    assert len(warnings) == 1 and "act" in warnings[0].getMessage()


def test_extreme_magnitudes():
    for value in (1e-42, 1e-35, 3e38):  # float32 denormal, tiny normal, near float32 max
        stats = TensorStats()
        stats.update(np.array([value, value / 2, 0.0], dtype=np.float32))
        expected, _ = np.histogram(np.abs(np.array([value, value / 2, 0.0], np.float32).astype(np.float64)),
                                   bins=stats.hist.size, range=(0.0, stats.range))
        np.testing.assert_array_equal(stats.hist, expected)
        assert stats.range > stats.absmax >= stats.range / 2


def test_dtypes_and_memory():
    stats = TensorStats(num_bins=16)
    stats.update(np.array([1, -3], dtype=np.int32))
    stats.update(np.array([0.25], dtype=np.float16))
    for _ in range(50):
        stats.update(np.ones((4, 4), dtype=np.float32))
    assert stats.hist.shape == (16 * 16,) and stats.count == 3 + 800  # 16 bins, oversampled 16 times
    assert stats.absmax == 3.0


def test_from_histogram_validation():
    with pytest.raises(ValueError, match="even"):
        TensorStats.from_histogram(np.ones(5, dtype=np.int64), 1.0, min_value=0.0, max_value=1.0)
    with pytest.raises(ValueError, match="outside"):
        TensorStats.from_histogram(np.ones(4, dtype=np.int64), 1.0, min_value=0.0, max_value=2.0)
    with pytest.raises(ValueError, match="count"):
        TensorStats.from_histogram(np.ones(4, dtype=np.int64), 1.0, min_value=0.0, max_value=1.0, count=3)
    with pytest.raises(ValueError, match="num_bins"):
        TensorStats(num_bins=7)


def test_fixed_range_by_hand():
    # 8 bins over [0, 4] (width 0.5); 4.0 itself goes to the last bin
    stats = TensorStats(num_bins=8, fixed_range=4.0, name="t")
    stats.update(np.array([0.0, 0.49, 0.5, -1.0, 3.99, 4.0, -4.0], dtype=np.float32))
    assert stats.binning == "fixed" and stats.is_exact
    assert stats.hist.tolist() == [2, 1, 1, 0, 0, 0, 0, 3]
    np.testing.assert_array_equal(stats.calibration_histogram(), stats.hist)
    assert stats.bin_width == 0.5 and stats.edges[-1] == 4.0
    with pytest.raises(ValueError, match=r"tensor 't': \|x\| = 4\.5 exceeds the fixed histogram range 4\.0"):
        stats.update(np.array([1.0, 4.5]))
    assert stats.count == 7  # the refused batch counts nothing
    zeros = TensorStats(num_bins=8, fixed_range=0.0)
    zeros.update(np.zeros(5))
    assert zeros.hist[0] == 5
    with pytest.raises(ValueError, match="exceeds"):
        zeros.update(np.array([1e-30]))


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
    assert stats.absmax == absmax and stats.count == data.size and stats.is_exact


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


def test_rebin_bounds_and_identity():
    rng = np.random.default_rng(5)
    data = np.concatenate([rng.lognormal(0, 1.2, 50_000), [0.0] * 1000]).astype(np.float32)
    stats = TensorStats(num_bins=256)  # 4096 stored bins over a power-of-two range
    stats.update(data)
    absmax = stats.absmax
    counts = stats.calibration_histogram()
    assert counts.dtype == np.int64 and counts.size == 256 and counts.sum() == data.size
    assert counts[0] >= 1000 and counts[-1] >= 1  # the zeros stay in bin 0, absmax stays in the last bin
    # Each re-binned cumulative count lies between the exact counts at the stored edges around its edge.
    stored_edges = np.arange(stats.hist.size + 1) * stats.hist_width
    stored_cumulative = np.concatenate(([0], np.cumsum(stats.hist)))
    absx = np.sort(np.abs(data.astype(np.float64)))
    for j, edge in enumerate(np.arange(1, 256) * (absmax / 256), start=1):
        k = int(np.searchsorted(stored_edges, edge, side="right")) - 1
        below = int(counts[:j].sum())
        assert stored_cumulative[k] <= below <= stored_cumulative[min(k + 1, stats.hist.size)]
        # ... so the error against the true count is at most one stored bin's count
        true_below = int(np.searchsorted(absx, edge, side="left"))
        assert abs(below - true_below) <= stats.hist[k]
    # A histogram already over [0, absmax] with num_bins bins comes back unchanged.
    exact = TensorStats(num_bins=256, fixed_range=absmax)
    exact.update(data)
    np.testing.assert_array_equal(rebin(exact.hist, absmax, absmax, 256), exact.hist)
    # Stored edges that coincide with the target edges give the exact counts.
    aligned = rebin(np.arange(16, dtype=np.int64), 4.0, 4.0, 4)
    assert aligned.tolist() == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7, 8 + 9 + 10 + 11, 12 + 13 + 14 + 15]


def test_merge_rules():
    a, b = TensorStats(8, fixed_range=2.0), TensorStats(8, fixed_range=2.0)
    a.update(np.array([0.1, 1.9]))
    b.update(np.array([2.0]))
    a.merge(b)
    assert a.hist.tolist() == [1, 0, 0, 0, 0, 0, 0, 2] and a.count == 3
    c = TensorStats(8, fixed_range=4.0)
    c.update(np.array([3.0]))
    with pytest.raises(ValueError, match="cannot merge fixed histograms"):
        a.merge(c)
    with pytest.raises(ValueError, match="cannot merge pow2 statistics"):
        a.merge(TensorStats(8))

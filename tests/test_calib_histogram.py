"""Streaming statistics: binning, exact range growth, NaN/Inf skipping."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from qdq_compiler.calib.histogram import TensorStats, pow2_above
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
    stats = TensorStats(num_bins=8, name="t")
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
    once = TensorStats(num_bins=8)
    once.update(np.array([0.0, 0.5, 1.0, 3.0, -3.9, 4.0]))
    assert once.hist.tolist() == stats.hist.tolist()


def test_zeros_then_values():
    stats = TensorStats(num_bins=8)
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
    for other in (whole, shuffled):
        np.testing.assert_array_equal(streamed.hist, other.hist)
        assert streamed.range == other.range and streamed.count == other.count
    # The growth rule is exact: numpy's own binning over the final range agrees count for count.
    reference, _ = np.histogram(np.abs(data.astype(np.float64)), bins=2048, range=(0.0, streamed.range))
    np.testing.assert_array_equal(streamed.hist, reference)
    width = streamed.bin_width
    for method in ("max", "percentile", "percentile{p=99.9}", "entropy", "mse"):
        assert abs(compute_amax(streamed, method) - compute_amax(whole, method)) <= width
    # Against a one-shot histogram over [0, absmax] (pytorch-quantization's binning), max is identical and
    # the percentile threshold agrees within one (the coarser) bin width.
    absmax = float(np.abs(data).max())
    assert compute_amax(streamed, "max") == absmax
    fine_counts, _ = np.histogram(np.abs(data.astype(np.float64)), bins=2048, range=(0.0, absmax))
    fine = TensorStats.from_histogram(
        fine_counts, absmax, min_value=float(data.min()), max_value=float(data.max())
    )
    for p in (99.0, 99.9, 99.99):
        assert abs(compute_amax(streamed, "percentile", p=p) - compute_amax(fine, "percentile", p=p)) <= width


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
                                   bins=2048, range=(0.0, stats.range))
        np.testing.assert_array_equal(stats.hist, expected)
        assert stats.range > stats.absmax >= stats.range / 2


def test_dtypes_and_memory():
    stats = TensorStats(num_bins=16)
    stats.update(np.array([1, -3], dtype=np.int32))
    stats.update(np.array([0.25], dtype=np.float16))
    for _ in range(50):
        stats.update(np.ones((4, 4), dtype=np.float32))
    assert stats.hist.shape == (16,) and stats.count == 3 + 800
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

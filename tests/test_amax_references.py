"""The fast amax methods choose the same bin as slow, literal implementations on random histograms.

The references follow each method's definition bin by bin: exact rationals for mse (so no float rounding can
decide between two candidates), float64 for entropy (as pytorch-quantization computes it), integers for
percentile. Histograms are small (a few hundred bins) so the references stay quick.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from qdq_compiler.calib.histogram import TensorStats
from qdq_compiler.calib.methods import compute_amax, entropy_divergences, mse_error_sums

WIDTH = 0.25  # a power of two: bin edges and centres are exact


def _random_counts(rng: np.random.Generator, kind: str, bins: int) -> np.ndarray:
    """Counts of one of several histogram shapes, the last bin non-empty (it holds absmax)."""
    index = np.arange(bins)
    if kind == "sparse":
        counts = (rng.random(bins) < 0.08) * rng.integers(1, 1000, bins)
    elif kind == "decaying":
        counts = rng.poisson(2000 * np.exp(-index / rng.uniform(20, bins)))
    elif kind == "bell":
        counts = rng.poisson(10 ** rng.uniform(1, 5) * np.exp(-0.5 * (index / bins * rng.uniform(2, 6)) ** 2))
    elif kind == "noise":
        counts = rng.integers(0, 4, bins)
    elif kind == "huge":  # counts past int64 partial sums: the exact mse falls back to Python integers
        counts = rng.integers(0, 10**14, bins) * (rng.random(bins) < 0.3)
    else:
        raise ValueError(kind)
    counts = np.asarray(counts, dtype=np.int64)
    counts[1] = max(counts[1], 1)  # entropy copies bin 1 into bin 0
    counts[-1] = max(counts[-1], 1)
    return counts


def _stats(counts: np.ndarray) -> TensorStats:
    top = counts.size * WIDTH
    return TensorStats.from_histogram(counts, top, min_value=-top * 0.9, max_value=top)


def reference_mse_bin(counts: np.ndarray, start_bin: int, stride: int) -> int:
    """The candidate bin whose centre, as amax, minimises sum(count * (fakequant(c) - c)**2), rationally."""
    centers = [(Fraction(j) + Fraction(1, 2)) * Fraction(WIDTH) for j in range(counts.size)]
    occupied = [(centers[j], int(c)) for j, c in enumerate(counts) if c]
    best, best_error = None, None
    for k in range(start_bin, counts.size, stride):
        amax = centers[k]
        error = Fraction(0)
        for center, count in occupied:
            level = min(max(round(center * 127 / amax), -127), 127)
            error += count * (level * amax / 127 - center) ** 2
        if best_error is None or error < best_error:  # the first minimum wins
            best, best_error = k, error
    assert best is not None
    return best


def reference_entropy_bin(counts: np.ndarray, start_bin: int, stride: int) -> int:
    """The threshold (bins kept) minimising KL(p || q), bin by bin in float64; the last minimum wins."""
    bins = [float(c) for c in counts]
    bins[0] = bins[1]
    best, best_kl = None, math.inf
    for i in range(start_bin, len(bins) + 1, stride):
        level_of = [j * 128 // i for j in range(i)]
        level_sum, level_nonzero = [0.0] * 128, [0] * 128
        for j in range(i):
            if bins[j] > 0:
                level_sum[level_of[j]] += bins[j]
                level_nonzero[level_of[j]] += 1
        q = [level_sum[level_of[j]] / level_nonzero[level_of[j]] if bins[j] > 0 else 0.0 for j in range(i)]
        p = bins[:i]
        p[i - 1] += sum(bins[i:])
        p_total, q_total = sum(p), sum(q)
        kl = 0.0
        for pj, qj in zip(p, q, strict=True):
            if pj > 0:
                kl = math.inf if qj == 0 else kl + pj / p_total * math.log((pj / p_total) / (qj / q_total))
        if kl <= best_kl + 1e-12:
            best, best_kl = i, min(kl, best_kl)
    assert best is not None
    return best


def reference_percentile_bin(counts: np.ndarray, p: str) -> int:
    """The first bin at which the cumulative count reaches the nearest rank ceil(p / 100 * total)."""
    rank = max(1, math.ceil(Fraction(p) / 100 * int(counts.sum())))
    running = 0
    for index, count in enumerate(counts):
        running += int(count)
        if running >= rank:
            return index
    raise AssertionError("the rank is at most the total")


CASES = [(kind, seed) for kind in ("sparse", "decaying", "bell", "noise", "huge") for seed in range(3)]


@pytest.mark.parametrize(("kind", "seed"), CASES)
def test_mse_chooses_the_reference_bin(kind, seed):
    rng = np.random.default_rng(seed)
    counts = _random_counts(rng, kind, bins=2 * int(rng.integers(60, 150)))
    start_bin, stride = int(rng.choice([8, 16, 40])), int(rng.choice([1, 1, 3]))
    expected = reference_mse_bin(counts, start_bin, stride)
    assert mse_error_sums(counts, start_bin, stride, prune=False).candidates[0] == start_bin
    amax = compute_amax(_stats(counts), f"mse{{start-bin={start_bin},stride={stride}}}")
    assert amax == min((expected + 0.5) * WIDTH, counts.size * WIDTH)


@pytest.mark.parametrize(("kind", "seed"), CASES)
def test_entropy_chooses_the_reference_bin(kind, seed):
    rng = np.random.default_rng(100 + seed)
    counts = _random_counts(rng, kind, bins=2 * int(rng.integers(70, 160)))
    stride = int(rng.choice([1, 1, 5]))
    expected = reference_entropy_bin(counts, 128, stride)
    thresholds, _ = entropy_divergences(counts, 128, stride)
    assert thresholds[0] == 128
    amax = compute_amax(_stats(counts), f"entropy{{stride={stride}}}")
    assert amax == min(expected * WIDTH, counts.size * WIDTH)


@pytest.mark.parametrize(("kind", "seed"), CASES)
@pytest.mark.parametrize("p", ["99.99", "99.9", "50", "37.5", "100"])
def test_percentile_chooses_the_reference_bin(kind, seed, p):
    rng = np.random.default_rng(200 + seed)
    counts = _random_counts(rng, kind, bins=2 * int(rng.integers(60, 1000)))
    expected = reference_percentile_bin(counts, p)
    amax = compute_amax(_stats(counts), f"percentile{{p={p}}}")
    assert amax == min((expected + 1) * WIDTH, counts.size * WIDTH)


def test_mse_integer_errors_equal_the_rational_definition():
    # MseSums.exact(k) is the squared error in units of (width / 254)**2, for every candidate
    counts = _random_counts(np.random.default_rng(7), "bell", bins=64)
    sums = mse_error_sums(counts, 4, 3, prune=False)
    centers = [(Fraction(j) + Fraction(1, 2)) * Fraction(WIDTH) for j in range(counts.size)]
    for index, k in enumerate(sums.candidates):
        amax = centers[k]
        error = sum(
            int(count) * (min(round(center * 127 / amax), 127) * amax / 127 - center) ** 2
            for center, count in zip(centers, counts, strict=True)
        )
        assert sums.exact(index) * (Fraction(WIDTH) / 254) ** 2 == error

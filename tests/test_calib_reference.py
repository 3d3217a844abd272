"""Every method's amax against a literal float64 reference computed on all the data at once.

The reference (docs/tensorrt-qdq.md section 6, TensorRT / pytorch-quantization): a histogram of |x| whose
range grows with the data -- 2048 bins over [0, r], r the first batch's absmax, then bins of the same width
up to the one holding the absmax of all data (one pass, the default) -- or 2048 bins over exactly [0, absmax]
(two passes, ``exact=True``); entropy with 128 levels from bin 128, the last minimum on ties (bin 0 takes
bin 1's count, as pytorch-quantization does); mse over the bin centres (first minimum); percentile = nearest
rank on all |x|; max = absmax. The data arrive in several batches whose range grows, through the real
collection path (``collect_statistics``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qdq_compiler.calib.collect import collect_statistics
from qdq_compiler.calib.histogram import collect_exact
from qdq_compiler.calib.methods import compute_amax

BINS = 2048
LEVELS = 128
PERCENTILES = (99.0, 99.9, 99.99)


# --------------------------------------------------------------------------- literal reference
def reference_histogram(absx: np.ndarray, absmax: float) -> np.ndarray:
    """Two-pass definition: BINS bins over exactly [0, absmax]."""
    counts, _ = np.histogram(absx, bins=BINS, range=(0.0, absmax))
    return counts


def reference_grown_histogram(
    batches: list[np.ndarray], max_bins: int = 32 * BINS
) -> tuple[np.ndarray, float]:
    """One-pass definition, from all the data at once: ``base`` bins over [0, r] (r = the first batch's
    absmax, which closes bin base - 1), then bins of width r / base up to the one holding the overall absmax;
    ``base`` = BINS, halved as often as needed to stay within ``max_bins`` bins."""
    r = float(np.abs(batches[0]).max())
    absx = np.abs(np.concatenate(batches).astype(np.float64))
    absmax = float(absx.max())
    base = BINS
    while True:
        n = base if absmax <= r else math.floor(Fraction(absmax) * base / Fraction(r)) + 1
        if n <= max_bins:
            break
        base //= 2
    low, _ = np.histogram(absx[absx <= r], bins=base, range=(0.0, r))
    high, _ = np.histogram(absx[absx > r], bins=r * np.arange(base, n + 1, dtype=np.float64) / base)
    return np.concatenate([low, high]), r / base


def reference_entropy(hist: np.ndarray, width: float) -> float:
    """KL threshold, candidate by candidate, from the definition (no prefix sums)."""
    bins = hist.astype(np.float64)
    bins[0] = bins[1]
    best_i, best_kl = None, math.inf
    for i in range(LEVELS, bins.size + 1):
        p = bins[:i].copy()
        p[i - 1] += bins[i:].sum()  # the clipped tail goes into the last kept bin
        kept = bins[:i]
        level = np.arange(i) * LEVELS // i  # bin j -> level floor(j * 128 / i)
        level_sum = np.bincount(level, weights=kept, minlength=LEVELS)
        level_nonzero = np.bincount(level, weights=(kept > 0).astype(np.float64), minlength=LEVELS)
        # each level's total spread evenly over its non-empty bins; empty bins stay empty
        q = np.where(kept > 0, level_sum[level] / np.maximum(level_nonzero[level], 1.0), 0.0)
        if q.sum() == 0:  # nothing kept but the tail
            continue
        p, q = p / p.sum(), q / q.sum()
        nonzero = p > 0
        if np.any(q[nonzero] == 0):
            kl = math.inf
        else:
            kl = float(np.sum(p[nonzero] * np.log(p[nonzero] / q[nonzero])))
        if kl <= best_kl:  # the last minimum wins
            best_i, best_kl = i, kl
    return best_i * width


def reference_mse(hist: np.ndarray, width: float) -> float:
    centers = (np.arange(hist.size) + 0.5) * width
    counts = hist.astype(np.float64)
    best, best_error = None, math.inf
    for k in range(LEVELS, hist.size):
        amax = centers[k]
        quantized = np.clip(np.round(centers * 127 / amax), -127, 127) * amax / 127
        error = float(np.sum(counts * (quantized - centers) ** 2))
        if error < best_error:  # the first minimum wins
            best, best_error = amax, error
    return best


def reference_amax(values: np.ndarray, hist: np.ndarray | None = None, width: float = 0.0) -> dict:
    """Reference amax per method; entropy/mse on ``hist`` (default: the two-pass histogram of ``values``)."""
    absx = np.abs(values.astype(np.float64))
    absmax = float(absx.max())
    if hist is None:
        hist, width = reference_histogram(absx, absmax), absmax / BINS
    ordered = np.sort(absx)
    out = {
        "max": absmax,
        "entropy": min(reference_entropy(hist, width), absmax),
        "mse": min(reference_mse(hist, width), absmax),
    }
    for p in PERCENTILES:
        rank = math.ceil(Fraction(str(p)) * ordered.size / 100)  # nearest rank, exact arithmetic
        out[f"percentile{{p={p}}}"] = float(ordered[rank - 1])
    return out


# --------------------------------------------------------------------------- data
def _growing(rng: np.random.Generator, draw, n: int = 200_000) -> list[np.ndarray]:
    """Five batches of ``draw(size)``, scaled 0.1, 0.3, 0.6, 1, 1: the range grows batch after batch."""
    return [draw(n // 5) * factor for factor in (0.1, 0.3, 0.6, 1.0, 1.0)]


def _with_last(batches: list[np.ndarray], extra: list[float]) -> list[np.ndarray]:
    return batches[:-1] + [np.concatenate([batches[-1], extra])]


DISTRIBUTIONS = {
    "normal": lambda rng: _growing(rng, rng.standard_normal),
    "laplace-outliers": lambda rng: _with_last(
        _growing(rng, lambda size: rng.laplace(size=size)), [31.0, -44.5, 25.0, 38.2, -29.0]
    ),
    "student-t3-outliers": lambda rng: _with_last(
        _growing(rng, lambda size: rng.standard_t(3, size)), [-60.0, 75.5]
    ),
    "uniform": lambda rng: _growing(rng, lambda size: rng.uniform(-2.0, 5.0, size)),
    "relu-sparse": lambda rng: _growing(
        rng, lambda size: np.where(rng.random(size) < 0.8, 0.0, np.maximum(rng.standard_normal(size), 0.0))
    ),
    # absmax 9.75 just above 8: a power-of-two range would be 16, wasting 40% of its bins
    "absmax-9.75": lambda rng: _with_last(
        _growing(rng, lambda size: np.clip(rng.standard_normal(size) * 2.5, -9.7, 9.7)), [9.75]
    ),
}


def _batches(name: str) -> list[np.ndarray]:
    rng = np.random.default_rng(sorted(DISTRIBUTIONS).index(name))
    return [batch.astype(np.float32) for batch in DISTRIBUTIONS[name](rng)]


def _identity_model() -> onnx.ModelProto:
    """A model whose input is the observed tensor (collection needs no inference then)."""
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


METHODS = ["max", *(f"percentile{{p={p}}}" for p in PERCENTILES), "entropy", "mse"]


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_one_pass_matches_the_literal_reference(name):
    """The default: one pass, the histogram grows; every method within one bin of the reference."""
    scaled = _batches(name)  # absmax x 0.1, 0.3, 0.6, 1, 1 (+ outliers)
    batches = [scaled[2], scaled[0], scaled[1], *scaled[3:]]  # smaller batches after the first, then growth
    widths = [float(np.abs(b).max()) for b in batches]
    assert widths[1] < widths[2] < widths[0] < max(widths[3:])
    stats = collect_statistics(_identity_model(), ["x"], [{"x": b} for b in batches])["x"]
    assert stats.binning == "grow"
    hist, width = reference_grown_histogram(batches)
    assert stats.hist_width == width and hist.size > BINS
    np.testing.assert_array_equal(stats.hist, hist)  # count for count
    reference = reference_amax(np.concatenate(batches), hist, width)
    # entropy and mse read the grown histogram re-binned onto the [0, absmax] grid (its bins are wider)
    grid = stats.on_absmax_grid()
    on_grid = reference_amax(np.concatenate(batches), grid.hist, grid.hist_width)
    reference.update(entropy=on_grid["entropy"], mse=on_grid["mse"])
    for method in METHODS:
        got = compute_amax(stats, method)
        tolerance = grid.hist_width if method in ("entropy", "mse") else width
        assert abs(got - reference[method]) <= tolerance, (method, got, reference[method], tolerance)
    # a one-shot iterator gives the same statistics
    once = collect_statistics(_identity_model(), ["x"], iter([{"x": b} for b in batches]))["x"]
    np.testing.assert_array_equal(once.hist, stats.hist)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_two_passes_match_the_literal_reference(name):
    """exact=True: 2048 bins over exactly [0, absmax] of all the data."""
    batches = _batches(name)
    data = np.concatenate(batches)
    stats = collect_statistics(_identity_model(), ["x"], [{"x": b} for b in batches], exact=True)["x"]
    assert stats.binning == "fixed" and stats.range == stats.absmax
    reference = reference_amax(data)
    absmax = reference["max"]
    if name == "absmax-9.75":
        assert absmax == 9.75
    width = absmax / BINS
    assert stats.absmax == absmax and stats.hist_width == width
    np.testing.assert_array_equal(stats.hist, reference_histogram(np.abs(data.astype(np.float64)), absmax))
    again = collect_exact(batches, name="x")  # the same through the histogram API
    np.testing.assert_array_equal(again.hist, stats.hist)
    for method in METHODS:
        got = compute_amax(stats, method)
        assert abs(got - reference[method]) <= width, (method, got, reference[method], width)
        assert compute_amax(again, method) == got


def test_literal_reference_by_hand():
    """The reference itself on histograms simple enough to check by hand (guards the test)."""
    hist = np.zeros(BINS, dtype=np.int64)
    hist[:LEVELS] = np.where(np.arange(LEVELS) % 2 == 0, 3, 1)  # 3, 1, 3, 1, ... over the first 128 bins
    hist[BINS - 1] = 1  # one outlier at absmax
    # i = 128: one bin per level, q = p up to the outlier folded into bin 127: KL ~ 0.0015. i in 129..2047:
    # the outlier lands in an empty bin (infinite). i = 2048: 16 bins per level flatten the 3/1 pattern
    # (KL ~ 0.13). So the threshold keeps 128 bins.
    assert reference_entropy(hist, 1.0) == 128.0
    single = np.zeros(BINS, dtype=np.int64)
    single[1000] = 7  # centre 1000.5: amax 1000.5 represents it exactly (level 127); smaller ones clip it
    assert reference_mse(single, 1.0) == 1000.5
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    assert reference_amax(values)["percentile{p=99.0}"] == 4.0  # rank ceil(4.95) = 5
    assert reference_amax(np.arange(1, 101, dtype=np.float32))["percentile{p=99.0}"] == 99.0

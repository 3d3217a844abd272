"""amax methods: hand-computed cases, properties, and literal reference implementations of entropy/mse."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from qdq_compiler.calib import methods
from qdq_compiler.calib.errors import CalibrationMethodError
from qdq_compiler.calib.histogram import TensorStats, collect_exact
from qdq_compiler.calib.methods import (
    AMAX_FLOOR,
    MethodPlan,
    MethodSpec,
    compute_amax,
    entropy_divergences,
    mse_errors,
    parse_method_spec,
    parse_override,
    register_method,
)


def _stats(counts: dict[int, int], num_bins: int, width: float, max_value: float) -> TensorStats:
    hist = np.zeros(num_bins, dtype=np.int64)
    for index, count in counts.items():
        hist[index] = count
    return TensorStats.from_histogram(hist, num_bins * width, min_value=0.0, max_value=max_value)


# --------------------------------------------------------------------------- hand-computed values
def test_max_and_percentile_by_hand():
    # width 1 over [0, 8): five values in bin 0, three in bin 2, two in bin 7 (absmax 7.5); total 10
    stats = _stats({0: 5, 2: 3, 7: 2}, num_bins=8, width=1.0, max_value=7.5)
    assert compute_amax(stats, "max") == 7.5
    # cumulative counts 5,5,8,8,8,8,8,10
    assert compute_amax(stats, "percentile{p=50}") == 1.0  # 5 >= 5 at bin 0 -> upper edge 1
    assert compute_amax(stats, "percentile{p=50.1}") == 3.0  # needs 5.01 -> bin 2 -> edge 3
    assert compute_amax(stats, "percentile{p=80}") == 3.0  # 8 >= 8 at bin 2
    assert compute_amax(stats, "percentile{p=90}") == 7.5  # bin 7 -> edge 8, clamped to absmax 7.5
    assert compute_amax(stats, "percentile", p=100) == 7.5


def test_entropy_by_hand():
    # 256 bins of width 1. Bins 0..127 alternate 3 (even) and 1 (odd); bin 0 is then replaced by bin 1's
    # count (1), as pytorch-quantization does. One outlier sits in bin 255 (absmax 256: the histogram is over
    # [0, absmax], so it is the calibration histogram as is).
    counts = {j: (3 if j % 2 == 0 else 1) for j in range(128)}
    counts[255] = 1
    stats = _stats(counts, num_bins=256, width=1.0, max_value=256.0)
    assert stats.binning == "fixed" and stats.range == stats.absmax  # the histogram over [0, absmax]
    thresholds, kl = entropy_divergences(stats.hist, start_bin=128)
    assert thresholds.tolist() == list(range(128, 257))
    # Total after the replacement: bin 0 (1) + 63 even bins of 3 + 64 odd bins of 1 + outlier = 255.
    # i = 128: one bin per level, so q equals the kept bins (sum 254); p adds the outlier to bin 127 (1 -> 2).
    #   KL = sum_j P log(P/Q) = 253/255 * ln(254/255) + 2/255 * ln((2/255) / (1/254))
    kl_128 = 253 / 255 * math.log(254 / 255) + 2 / 255 * math.log(2 * 254 / 255)
    assert kl[0] == pytest.approx(kl_128, rel=1e-12)
    # 129 <= i <= 255: the outlier is clipped into bin i-1, which is empty in q -> infinite divergence.
    assert np.all(np.isinf(kl[1:-1]))
    # i = 256: levels are bin pairs (2k, 2k+1); pairs (3, 1) become (2, 2), pair (1, 1) and the outlier's
    # pair (0, 1) are unchanged; nothing is clipped: KL = 63 * (3 ln(3/2) + 1 ln(1/2)) / 255.
    kl_256 = 63 * (3 * math.log(1.5) + math.log(0.5)) / 255
    assert kl[-1] == pytest.approx(kl_256, rel=1e-12)
    # kl_128 ~ 0.0015 < kl_256 ~ 0.129: the threshold keeps 128 bins, amax = edge 128.
    assert compute_amax(stats, "entropy") == 128.0


def test_entropy_last_minimum_wins(monkeypatch):
    stats = _stats({1: 5, 255: 1}, num_bins=256, width=0.5, max_value=128.0)
    fake = (np.array([128, 129, 130, 131]), np.array([0.5, 0.1, 0.1, 0.3]))
    monkeypatch.setattr(methods, "entropy_divergences", lambda *a, **k: fake)
    assert compute_amax(stats, "entropy") == 130 * 0.5  # the later of the two minima


def test_mse_by_hand():
    # width 1 over [0, 256]: N values in bin 100 (centre 100.5) and one in bin 255 (centre 255.5, absmax
    # 256). Only two candidates with start_bin=190, stride=65: centres 190.5 and 255.5.
    # amax 190.5: 100.5 * 127 / 190.5 = 67 exactly -> no rounding error; the outlier clips to 190.5:
    #   error = (255.5 - 190.5)^2 = 4225.
    # amax 255.5: 100.5 * 127 / 255.5 = 49.955 -> 50 -> 50 * 255.5 / 127 = 100.5905...; outlier exact:
    #   error = N * (12775 / 127 - 100.5)^2 = N * 0.0081995...
    def stats_for(n):
        return _stats({100: n, 255: 1}, num_bins=256, width=1.0, max_value=256.0)

    per_value = (12775 / 127 - 100.5) ** 2
    centers = np.arange(256) + 0.5
    errors = mse_errors(centers, stats_for(10**6).hist, np.array([190.5, 255.5]))
    assert errors[0] == pytest.approx(4225.0, rel=1e-12)
    assert errors[1] == pytest.approx(10**6 * per_value, rel=1e-9)
    # N = 10^6: 8199.5 > 4225 -> clip at 190.5. N = 10^5: 819.95 < 4225 -> keep 255.5.
    assert compute_amax(stats_for(10**6), "mse{start_bin=190,stride=65}") == 190.5
    assert compute_amax(stats_for(10**5), "mse", start_bin=190, stride=65) == 255.5


def test_zero_tensor_gets_positive_scale():
    stats = TensorStats()
    stats.update(np.zeros((2, 3, 4), dtype=np.float32))
    for method in ("max", "percentile", "entropy", "mse"):
        amax = compute_amax(stats, method)
        assert amax == AMAX_FLOOR
        assert np.float32(amax) / np.float32(127) > 0


def test_no_finite_values_is_an_error():
    stats = TensorStats(name="dead")
    stats.update(np.array([np.nan, np.inf]))
    with pytest.raises(CalibrationMethodError, match="'dead' has no finite values"):
        compute_amax(stats, "max")


# --------------------------------------------------------------------------- literal references
def reference_entropy(hist: np.ndarray, width: float, start_bin: int = 128) -> tuple[float, list[float]]:
    """Literal float64 KL calibration, bin by bin (pytorch-quantization's definition)."""
    bins = [float(c) for c in hist]
    last_used = max(j for j, c in enumerate(bins) if c > 0)
    bins = bins[: last_used + 1]
    bins[0] = bins[1]
    best_i, best_kl, divergences = None, math.inf, []
    for i in range(start_bin, len(bins) + 1):
        level_of = [j * 128 // i for j in range(i)]
        level_sum = [0.0] * 128
        level_nonzero = [0] * 128
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
        divergences.append(kl)
        if kl <= best_kl:  # "<=": the last minimum wins
            best_i, best_kl = i, kl
    return min(best_i * width, (last_used + 1) * width), divergences


def reference_mse(hist: np.ndarray, width: float, start_bin: int = 128) -> float:
    """Literal float64 MSE calibration over bin centres."""
    last_used = max(j for j, c in enumerate(hist) if c > 0)
    centers = [(j + 0.5) * width for j in range(last_used + 1)]
    best, best_error = None, math.inf
    for k in range(start_bin, last_used + 1):
        amax = centers[k]
        error = 0.0
        for c, count in zip(centers, hist[: last_used + 1], strict=True):
            q = min(max(round(c * 127 / amax), -127), 127) * amax / 127
            error += float(count) * (q - c) ** 2
        if error < best_error:  # the first minimum wins
            best, best_error = amax, error
    return best


_DISTRIBUTIONS = {
    "normal": lambda rng, n: rng.standard_normal(n),
    "relu": lambda rng, n: np.maximum(rng.standard_normal(n) + 0.3, 0),
    "laplace": lambda rng, n: rng.laplace(size=n),
    "lognormal": lambda rng, n: rng.lognormal(0, 1.0, n),
    "outliers": lambda rng, n: np.concatenate([rng.standard_normal(n - 5), [40.0, -35.0, 60, 22, 31]]),
    "uniform": lambda rng, n: rng.uniform(-2, 5, n),
    "bimodal": lambda rng, n: np.concatenate([rng.normal(0, 0.2, n // 2), rng.normal(4, 0.5, n - n // 2)]),
}


def _collected(name: str, num_bins: int, seed: int = 0, n: int = 20_000, exact: bool = True) -> TensorStats:
    rng = np.random.default_rng(seed)
    data = _DISTRIBUTIONS[name](rng, n).astype(np.float32)
    pieces = np.array_split(data, 4)
    if exact:
        return collect_exact(pieces, num_bins=num_bins, name=name)
    stats = TensorStats(num_bins=num_bins, name=name)
    for piece in pieces:
        stats.update(piece)
    return stats


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "one-pass"])
@pytest.mark.parametrize("name", sorted(_DISTRIBUTIONS))
def test_entropy_and_mse_match_literal_reference(name, exact):
    # The fast implementations equal the bin-by-bin reference on the histogram they read: two-pass (fixed
    # range), or grown in one pass (more than num_bins bins here: the range grows after the first piece) and
    # re-binned onto the [0, absmax] grid.
    collected = _collected(name, num_bins=256, exact=exact)
    stats = collected.on_absmax_grid()
    assert stats.binning == "fixed" and (stats is collected) == exact
    hist, width = stats.calibration_histogram(), stats.hist_width
    expected, divergences = reference_entropy(hist, width)
    _, kl = entropy_divergences(hist[: len(divergences) + 127])
    finite = np.isfinite(divergences)
    np.testing.assert_array_equal(np.isfinite(kl), finite)
    np.testing.assert_allclose(kl[finite], np.asarray(divergences)[finite], rtol=1e-9, atol=1e-12)
    assert abs(compute_amax(collected, "entropy") - min(expected, stats.absmax)) <= width
    assert abs(compute_amax(collected, "mse") - min(reference_mse(hist, width), stats.absmax)) <= width


def test_entropy_matches_reference_at_2048_bins():
    stats = _collected("relu", num_bins=2048, seed=5, n=50_000)
    expected, _ = reference_entropy(stats.hist, stats.hist_width)
    assert abs(compute_amax(stats, "entropy") - min(expected, stats.absmax)) <= stats.hist_width


@pytest.mark.parametrize("name", sorted(_DISTRIBUTIONS))
@pytest.mark.parametrize("seed", [1, 2])
def test_amax_is_positive_and_at_most_absmax(name, seed):
    stats = _collected(name, num_bins=2048, seed=seed)
    for method in ("max", "percentile", "percentile{p=99}", "percentile{p=100}", "entropy", "mse"):
        amax = compute_amax(stats, method)
        assert 0 < amax <= stats.absmax, (method, amax, stats.absmax)
    assert compute_amax(stats, "max") == stats.absmax == compute_amax(stats, "percentile{p=100}")


# --------------------------------------------------------------------------- specs, registry and plans
def test_parse_method_spec():
    spec = parse_method_spec("percentile{p=99.9}")
    assert spec == MethodSpec("percentile", (("p", 99.9),))
    assert str(spec) == "percentile{p=99.9}"
    assert parse_method_spec(" entropy ") == MethodSpec("entropy")
    spec = parse_method_spec("mse{start-bin=256, stride=2}")
    assert spec.kwargs == {"start_bin": 256, "stride": 2}
    assert str(spec) == "mse{start-bin=256,stride=2}"
    assert parse_method_spec(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kl", "unknown calibration method 'kl'; valid: auto, entropy, max, mse, percentile"),
        ("percentile{q=3}", "has no option 'q'; valid: p"),
        ("max{p=1}", "has no option 'p'; valid: none"),
        ("percentile{p=abc}", "bad option value"),
        ("percentile{p}", "malformed option"),
        ("percentile{p=1,p=2}", "given twice"),
        ("{p=1}", "malformed method spec"),
    ],
)
def test_bad_method_specs(text, message):
    with pytest.raises(CalibrationMethodError, match=message.replace("{", r"\{")) as info:
        parse_method_spec(text)
    assert "\n" not in str(info.value)


def test_bad_method_parameters():
    stats = _collected("normal", 2048)
    with pytest.raises(CalibrationMethodError, match=r"\(0, 100\]"):
        compute_amax(stats, "percentile{p=0}")
    with pytest.raises(CalibrationMethodError, match="start_bin must be >= 128"):
        compute_amax(stats, "entropy{start_bin=64}")
    with pytest.raises(CalibrationMethodError, match="stride"):
        compute_amax(stats, "mse", stride=0)


def test_register_method():
    register_method("test-half-max", lambda stats, factor=0.5: stats.absmax * factor)
    try:
        stats = _collected("normal", 2048)
        assert compute_amax(stats, "test-half-max") == pytest.approx(stats.absmax / 2)
        assert compute_amax(stats, "test-half-max{factor=0.25}") == pytest.approx(stats.absmax / 4)
        with pytest.raises(CalibrationMethodError, match="already registered"):
            register_method("test-half-max", lambda stats: 1.0)
    finally:
        methods._METHODS.pop("test-half-max")


def test_method_plan():
    plan = MethodPlan(
        default="entropy",
        overrides=[("op:Sigmoid", "max"), ("/head/*", "percentile{p=99.9}"), "op:Conv*=mse", "*=max"],
    )
    assert str(plan.method_for("/head/conv", ["Conv"])) == "percentile{p=99.9}"  # first match wins
    assert str(plan.method_for("/a/sig", ["Sigmoid", "Mul"])) == "max"
    assert str(plan.method_for("/b/c", ["ConvTranspose"])) == "mse"
    assert str(MethodPlan().method_for("x")) == "entropy"
    assert str(plan) == "entropy;op:Sigmoid=max;/head/*=percentile{p=99.9};op:Conv*=mse;*=max"
    stats = {"b": _collected("normal", 2048), "a": _collected("relu", 2048)}
    amax = MethodPlan("max", [("a", "percentile{p=99}")]).compute(stats, {"b": ["Conv"]})
    assert list(amax) == ["a", "b"]
    assert amax["b"] == stats["b"].absmax and amax["a"] < stats["a"].absmax
    expected = ("op:Relu", parse_method_spec("percentile{p=99.9}"))
    assert parse_override("op:Relu=percentile{p=99.9}") == expected
    with pytest.raises(CalibrationMethodError, match="malformed override"):
        parse_override("entropy")
    with pytest.raises(CalibrationMethodError, match="unknown calibration method"):
        MethodPlan("median")


def test_method_options_are_typed_dataclasses_read_with_the_pass_option_grammar():
    options = methods.method_options("percentile")
    assert dataclasses.is_dataclass(options) and options().p == 99.99
    assert [(f.name, f.default) for f in dataclasses.fields(methods.method_options("mse"))] == [
        ("start_bin", 128),
        ("stride", 1),
    ]
    spec = parse_method_spec("percentile{p=99}")  # typed: p is a float, so the text 99 means 99.0
    assert spec.kwargs == {"p": 99.0} and isinstance(spec.kwargs["p"], float)
    assert str(spec) == "percentile{p=99.0}" and parse_method_spec(str(spec)) == spec
    with pytest.raises(CalibrationMethodError, match=r"bad option value '1\.5'.*expected an integer"):
        parse_method_spec("entropy{stride=1.5}")  # start_bin and stride are integers
    with pytest.raises(CalibrationMethodError, match="has no option 'q'"):
        parse_method_spec("percentile{q=abc}")  # an unknown option is named before its value is read


def test_method_spec_text_is_parsed_once_and_reparsed_after_a_registration():
    # weights ask for their method once per layer: the same text gives the same (immutable) spec object
    assert parse_method_spec("mse{stride=2}") is parse_method_spec("mse{stride=2}")
    register_method("test-scaled-max", lambda stats, factor=0.5: stats.absmax * factor)
    try:
        first = parse_method_spec("test-scaled-max{factor=0.25}")
        methods._METHODS.pop("test-scaled-max")
        methods._OPTIONS.pop("test-scaled-max")
        register_method("test-scaled-max", lambda stats, factor=1: stats.absmax * factor)  # now an int option
        second = parse_method_spec("test-scaled-max{factor=3}")
        assert first.kwargs == {"factor": 0.25} and second.kwargs == {"factor": 3}
        assert isinstance(second.kwargs["factor"], int)
        with pytest.raises(CalibrationMethodError, match="expected an integer"):
            parse_method_spec("test-scaled-max{factor=0.25}")  # not served from before the registration
    finally:
        methods._METHODS.pop("test-scaled-max", None)
        methods._OPTIONS.pop("test-scaled-max", None)

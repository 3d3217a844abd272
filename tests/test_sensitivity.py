"""`qdqc sensitivity`: SQNR arithmetic, the amax memo, and a planted outlier layer found first."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy import (
    LayerSensitivity,
    analyze_sensitivity,
    compare_outputs,
    format_sensitivity,
    run_outputs,
    sqnr_db,
)
from qdq_compiler.accuracy.sensitivity import exclude_pattern, gain, rank_key
from qdq_compiler.calib import methods
from qdq_compiler.calib.histogram import TensorStats
from qdq_compiler.cli import main
from qdq_compiler.cli_options import apply_compile_flags
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pipelines import TRT_INT8
from qdq_compiler.pm import PassContext, PassManager

PLANTED = "conv_b"  # reads a tensor with one huge channel: per-tensor INT8 crushes the other seven


def test_sqnr_by_hand():
    assert sqnr_db(np.array([1.0, 2.0]), np.array([1.0, 1.0])) == pytest.approx(10 * math.log10(5))
    assert sqnr_db(np.array([3.0, -4.0]), np.array([3.0, -4.0])) == math.inf
    assert sqnr_db(np.zeros(3), np.array([0.0, 1.0, 0.0])) == -math.inf


def test_compare_outputs_averages_relative_noise_and_checks_names():
    ref = {"a": np.array([10.0, 0.0]), "b": np.array([1.0, 0.0])}
    noisy = {"a": np.array([10.0, 10 * math.sqrt(0.1)]), "b": np.array([1.0, math.sqrt(0.01)])}
    result = compare_outputs(ref, noisy)
    assert result.per_output["a"] == pytest.approx(10.0)
    assert result.per_output["b"] == pytest.approx(20.0)
    assert result.sqnr_db == pytest.approx(-10 * math.log10((0.1 + 0.01) / 2))
    with pytest.raises(QdqcError, match="lacks output"):
        compare_outputs(ref, {"a": ref["a"]})
    with pytest.raises(QdqcError, match="has shape"):
        compare_outputs(ref, {"a": ref["a"], "b": np.zeros(3)})


def test_memoized_amax_computes_once_and_never_serves_stale_values(monkeypatch):
    calls = []
    real = methods._METHODS["max"]

    def counting(stats, **kwargs):
        calls.append(stats.absmax)
        return real(stats, **kwargs)

    monkeypatch.setitem(methods._METHODS, "max", counting)
    stats = TensorStats(16, name="t")
    stats.update(np.array([1.0, -2.0], np.float32))
    with methods.memoized_amax():
        assert methods.compute_amax(stats, "max") == 2.0
        assert methods.compute_amax(stats.copy(), "max") == 2.0  # same content: served from the memo
        assert len(calls) == 1
        stats.update(np.array([5.0], np.float32))
        assert methods.compute_amax(stats, "max") == 5.0  # new content: computed again
        assert len(calls) == 2
    methods.compute_amax(stats, "max")
    methods.compute_amax(stats, "max")
    assert len(calls) == 4  # outside the block nothing is memoized


def test_memoized_amax_tells_histograms_and_parameter_types_apart():
    def stats_of(bulk: float) -> TensorStats:
        stats = TensorStats(name="t")
        stats.update(np.array([0.0, 10.0] + [bulk] * 99, np.float32))  # same count, extremes and range
        return stats

    low, high = stats_of(1.0), stats_of(9.0)
    expected = methods.compute_amax(high, "mse")
    with methods.memoized_amax():
        assert methods.compute_amax(low, "mse") != expected
        assert methods.compute_amax(high, "mse") == expected  # only the histogram differs
        methods.compute_amax(high, "entropy", stride=1)
        with pytest.raises(methods.CalibrationMethodError, match="stride"):
            methods.compute_amax(high, "entropy", stride=True)  # refused as outside the block


@pytest.mark.parametrize("name", ["/b[1]/conv*", "a?b", "//m*/x/Conv", "plain"])
def test_exclude_pattern_matches_only_the_name(name):
    from fnmatch import fnmatchcase

    assert fnmatchcase(name, exclude_pattern(name))
    assert not fnmatchcase(name + "x", exclude_pattern(name))
    if any(c in name for c in "*?["):  # a wildcard in the name stays a literal character
        other = name.replace("*", "z").replace("?", "z").replace("[", "z")
        assert not fnmatchcase(other, exclude_pattern(name))


def test_nan_outputs_rank_last_and_equal_infinities_gain_nothing():
    result = compare_outputs({"y": np.array([1.0, 2.0])}, {"y": np.array([np.nan, 2.0])})
    assert math.isnan(result.per_output["y"]) and math.isnan(result.sqnr_db)
    with pytest.raises(QdqcError, match="NaN or Inf"):
        compare_outputs({"y": np.array([np.inf, 2.0])}, {"y": np.array([1.0, 2.0])})
    assert gain(math.inf, math.inf) == 0.0 and math.isnan(gain(math.nan, 3.0))
    layers = [
        LayerSensitivity("n", "Conv", None, math.nan, math.nan),
        LayerSensitivity("b", "Conv", None, 5.0, -1.0),
        LayerSensitivity("a", "Conv", None, 9.0, 3.0),
    ]
    assert [item.name for item in sorted(layers, key=rank_key)] == ["a", "b", "n"]


def _planted_model(planted: str = PLANTED) -> onnx.ModelProto:
    """x [N,4,8,8] -> conv_a -> Relu -> conv_b -> Relu -> conv_c -> Relu -> conv_d -> y.

    conv_a's channel 0 has bias 60, so conv_b's input has one channel near 60 and seven near 1; conv_b
    reads channel 0 with tiny weights, so the crushed small channels are what its output is made of.
    """
    rng = np.random.default_rng(5)

    def weight(out_ch: int, in_ch: int, k: int) -> np.ndarray:
        scale = math.sqrt(2.0 / (in_ch * k * k))
        return (rng.standard_normal((out_ch, in_ch, k, k)) * scale).astype(np.float32)

    w_a, b_a = weight(8, 4, 3), np.zeros(8, np.float32)
    b_a[0] = 60.0
    w_b = weight(8, 8, 3)
    w_b[:, 0] *= 1e-3
    inits = [
        numpy_helper.from_array(w_a, "w_a"),
        numpy_helper.from_array(b_a, "b_a"),
        numpy_helper.from_array(w_b, "w_b"),
        numpy_helper.from_array(weight(8, 8, 1), "w_c"),
        numpy_helper.from_array(weight(4, 8, 1), "w_d"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_a", "b_a"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["a_act"], name="relu_a"),
        helper.make_node("Conv", ["a_act", "w_b"], ["b"], name=planted, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["b_act"], name="relu_b"),
        helper.make_node("Conv", ["b_act", "w_c"], ["c"], name="conv_c"),
        helper.make_node("Relu", ["c"], ["c_act"], name="relu_c"),
        helper.make_node("Conv", ["c_act", "w_d"], ["y"], name="conv_d"),
    ]
    graph = helper.make_graph(
        nodes,
        "planted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _samples(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 4, 8, 8)).astype(np.float32)


def _batches() -> list[dict[str, np.ndarray]]:
    return [{"x": batch} for batch in np.split(_samples(8, 2), 4)]


# trt-int8 without equalize: cross-layer equalisation (on by default) repairs the planted layer below, whose
# one wide input channel is the case it exists for (test_pipeline_defaults.py measures that), so the ranking
# is tested on the placement and calibration alone.
WITHOUT_EQUALIZE = TRT_INT8.replace("equalize,", "")


def _analyze(model: onnx.ModelProto, top: int, pipeline: str = WITHOUT_EQUALIZE):
    manager = PassManager(pipeline)
    apply_compile_flags(manager, {"method": "max"})
    ctx = PassContext(calibration_data=_samples(16, 1))
    return analyze_sensitivity(model, manager, ctx, _batches(), top=top)


def test_the_planted_layer_ranks_first_and_keeping_it_float_pays(monkeypatch):
    import qdq_compiler.passes.calibrate as calibrate

    collected = []
    real_collect = calibrate.collect_statistics

    def counting(*args, **kwargs):
        collected.append(1)
        return real_collect(*args, **kwargs)

    monkeypatch.setattr(calibrate, "collect_statistics", counting)
    report = _analyze(_planted_model(), top=2)
    assert len(collected) == 1  # the model ran for calibration once, for every variant
    assert report.samples == 8
    assert [name for name, _ in report.already_float] == ["conv_d"]  # the head output layer
    ranked = [item.name for item in report.layers]
    assert sorted(ranked) == ["conv_a", "conv_b", "conv_c"]
    first, *others = report.layers
    assert first.name == PLANTED
    assert first.gain_db > 10.0 and all(first.gain_db > item.gain_db + 10.0 for item in others)
    # the baseline is what a plain compile with the same options gives
    plain = load_model(_planted_model())
    manager = PassManager(WITHOUT_EQUALIZE)
    apply_compile_flags(manager, {"method": "max"})
    manager.run(plain, PassContext(calibration_data=_samples(16, 1)))
    batches = _batches()
    assert report.baseline == compare_outputs(
        run_outputs(_planted_model(), batches), run_outputs(to_proto(plain), batches)
    )
    assert [step.float_layers for step in report.cumulative] == [(PLANTED,), (PLANTED, others[0].name)]
    assert report.cumulative[0].sqnr_db == pytest.approx(first.sqnr_db)
    assert report.cumulative[0].int8_mac_share < report.baseline_int8_mac_share
    assert first.mac_share is not None and 0.0 < first.mac_share < 1.0
    text = format_sensitivity(report)
    assert f"   1  {PLANTED}" in text and "--exclude conv_b" in text


def test_names_with_glob_characters_are_excluded_exactly():
    report = _analyze(_planted_model("b[0]*conv?"), top=1)
    assert report.layers[0].name == "b[0]*conv?" and report.layers[0].gain_db > 10.0
    assert report.cumulative[0].float_layers == ("b[0]*conv?",)


def test_layers_without_a_unique_name_are_reported_not_dropped():
    model = _planted_model()
    for node in model.graph.node:
        node.name = ""
    report = _analyze(model, top=1, pipeline="infer-shapes,place-qdq,calibrate")
    assert report.skipped and not report.layers
    assert all("no unique node name" in reason for _, reason in report.skipped)
    assert "not measured" in format_sensitivity(report)


def test_cli_sensitivity_text_json_and_errors(tmp_path, capsys):
    model_path, data_path = tmp_path / "planted.onnx", tmp_path / "calib.npy"
    onnx.save(_planted_model(), model_path)
    np.save(data_path, _samples(16, 1))
    before = model_path.read_bytes()
    args = ["-q", "sensitivity", str(model_path), "--calib", str(data_path), "--method", "max", "--top", "1"]
    assert main(args) == 0
    assert f"   1  {PLANTED}" in capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    assert capsys.readouterr().out == first  # same model, data and options: the same report
    report = json.loads(first)
    assert report["layers"][0]["layer"] == PLANTED and report["cumulative"][0]["float_layers"] == [PLANTED]
    assert model_path.read_bytes() == before

    stats_path = tmp_path / "planted.stats"
    assert main(["-q", "calibrate", str(model_path), "--calib", str(data_path), "-o", str(stats_path)]) == 0
    cached = [
        "-q",
        "sensitivity",
        str(model_path),
        "--calib-cache",
        str(stats_path),
        "--eval",
        str(data_path),
        "--method",
        "max",
        "--top",
        "1",
        "--json",
    ]
    assert main(cached) == 0
    assert capsys.readouterr().out == first  # the cache gives the same statistics, so the same report

    assert main(["sensitivity", str(model_path)]) == 2
    assert "needs inputs to measure on" in capsys.readouterr().err
    assert main(["sensitivity", str(model_path), "--calib", str(data_path), "--exclude-op", "Conv"]) == 2
    assert "no INT8 layers to rank" in capsys.readouterr().err
    assert main(["sensitivity", str(model_path), "--calib", str(tmp_path / "missing.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qdqc: error:") and err.count("\n") == 1


def test_progress_counts_every_variant_once():
    calls = []
    manager = PassManager("trt-int8")
    apply_compile_flags(manager, {"method": "max"})
    ctx = PassContext(calibration_data=_samples(16, 1))
    analyze_sensitivity(
        _planted_model(),
        manager,
        ctx,
        _batches(),
        top=2,
        progress=lambda done, total, what: calls.append((done, total)),
    )
    assert [done for done, _ in calls] == [1, 2, 3, 4, 5]  # 3 layers, then 2 cumulative steps
    assert all(total == 5 for _, total in calls)


def test_method_auto_is_chosen_once_and_every_variant_reuses_it(monkeypatch):
    """sensitivity --method auto: auto's seven variants are measured once; the layer variants calibrate
    with that choice (plain variants, no method of their own) and the report's model records it."""
    from qdq_compiler.quant.auto_method import AUTO_METADATA_KEY
    from qdq_compiler.search import engine
    from qdq_compiler.search.method_auto import validate_method_auto

    seen = []
    measure = engine.Evaluator.__call__
    monkeypatch.setattr(engine.Evaluator, "__call__", lambda self, v: seen.append(v) or measure(self, v))
    manager = PassManager(WITHOUT_EQUALIZE)
    apply_compile_flags(manager, {"method": "auto"})
    ctx = PassContext(calibration_data=_samples(16, 1))
    validation = validate_method_auto(_planted_model(), manager, ctx, _batches())
    assert validation is not None and len(validation.scores) == len(seen) == 7
    assert all(variant.method is not None for variant in seen)
    report = analyze_sensitivity(_planted_model(), manager, ctx, _batches(), top=1)
    assert len(seen) == 7 + 1 + 3 + 1  # auto once; then all INT8, three layers, one cumulative step
    assert all(variant.method is None and not variant.overrides for variant in seen[7:])
    assert report.model is not None
    record = json.loads(report.model.metadata_props[AUTO_METADATA_KEY])
    assert record["validated"] and all(v["end_sqnr_db"] is not None for v in record["variants"])
    best = max(validation.scores.values(), key=lambda result: result.sqnr_db)
    assert validation.scores[record["chosen"]].sqnr_db == best.sqnr_db

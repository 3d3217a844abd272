"""`--method auto`: the local criterion, the choice on known histograms, scale groups, validation on the
model's outputs, the option grammar and reproducibility."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import onnx
import pytest

from qdq_compiler.accuracy.numerics import compare_outputs, run_outputs
from qdq_compiler.calib import CalibrationMethodError, compute_amax, parse_method_spec
from qdq_compiler.calib.auto import (
    DEFAULT_CANDIDATES,
    choose_for_group,
    choose_for_tensor,
    quantization_errors,
)
from qdq_compiler.calib.histogram import TensorStats
from qdq_compiler.cli import main
from qdq_compiler.errors import PipelineError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.models import build_c2f
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.quant.auto_method import AUTO_METADATA_KEY, MIX, AutoOptions, choose_auto
from qdq_compiler.quant.scale_groups import scale_groups
from qdq_compiler.search import EvalSource
from qdq_compiler.search.method_auto import validate_method_auto


def _stats(values: np.ndarray, name: str = "") -> TensorStats:
    stats = TensorStats(name=name)
    stats.update(np.asarray(values, dtype=np.float32))
    return stats


def _uniform(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, 100_000)


def _heavy_tailed(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(3, 100_000)  # Student t, 3 degrees of freedom


def _brute_force_sqnr(values: np.ndarray, amax: float) -> float:
    x = np.abs(np.asarray(values, dtype=np.float64))
    step = amax / 127
    quantized = np.clip(np.round(x / step), -127, 127) * step
    return 10 * math.log10(np.sum(x**2) / np.sum((quantized - x) ** 2))


@pytest.mark.parametrize("make", [_uniform, _heavy_tailed], ids=["uniform", "student-t"])
def test_local_error_matches_fake_quantizing_the_values(make):
    values = make()
    stats = _stats(values)
    for method in ("max", "percentile{p=99.9}", "mse"):
        amax = compute_amax(stats, method)
        (error,) = quantization_errors(stats, [amax])
        assert error.sqnr_db == pytest.approx(_brute_force_sqnr(values, amax), abs=0.1)


def test_uniform_tensor_keeps_max():
    stats = _stats(_uniform())
    assert compute_amax(stats, "auto") == compute_amax(stats, "max")


def test_heavy_tailed_tensor_does_not_take_max():
    values = _heavy_tailed()
    stats = _stats(values)
    amaxes = [compute_amax(stats, text) for text in DEFAULT_CANDIDATES]
    choice = choose_for_tensor(stats, amaxes, tolerance_db=0.1)
    assert DEFAULT_CANDIDATES[choice.chosen] != "max"
    chosen = compute_amax(stats, "auto")
    assert chosen == amaxes[choice.chosen] < compute_amax(stats, "max")
    # the choice is really better on the values themselves, by more than a dB
    assert _brute_force_sqnr(values, chosen) > _brute_force_sqnr(values, amaxes[0]) + 1.0


def test_tolerance_prefers_the_earlier_candidate():
    stats = _stats(_heavy_tailed())
    strict = compute_amax(stats, "auto{tolerance=0}")
    loose = compute_amax(stats, "auto{tolerance=100}")
    assert loose == compute_amax(stats, "max")  # every candidate ties: the first wins
    assert strict != loose


def test_candidates_option_and_its_errors():
    stats = _stats(_heavy_tailed())
    spec = parse_method_spec("auto{candidates=[max,percentile{p=99.9}]}")
    assert parse_method_spec(str(spec)) == spec
    assert compute_amax(stats, spec) in (
        compute_amax(stats, "max"),
        compute_amax(stats, "percentile{p=99.9}"),
    )
    for text, message in [
        ("auto{candidates=[max,auto]}", "cannot be one of"),
        ("auto{candidates=[kl]}", "unknown calibration method 'kl'"),
        ("auto{candidates=[]}", "at least one"),
        ("auto{candidates=[mse,mse]}", "twice"),
        ("auto{samples=0}", "samples"),
    ]:
        with pytest.raises(CalibrationMethodError, match=message):
            compute_amax(stats, text)
    with pytest.raises(PipelineError, match="cannot be one of"):
        PassManager("calibrate{method=auto{candidates=[auto]}}")


def test_group_gets_one_method_even_where_its_members_would_differ():
    members = {"uniform": _stats(_uniform()), "tailed": _stats(_heavy_tailed() * 0.3)}
    amax = {name: [compute_amax(s, text) for text in DEFAULT_CANDIDATES] for name, s in members.items()}
    alone = {name: choose_for_tensor(members[name], amax[name], 0.1).chosen for name in members}
    assert alone["uniform"] != alone["tailed"]
    group = choose_for_group(members, amax, 0.1)
    # one amax per candidate: the largest member's (unify-scales' rule)
    assert group.amax == tuple(max(amax["uniform"][i], amax["tailed"][i]) for i in range(len(amax["tailed"])))
    assert group.scores_db[group.chosen] >= max(group.scores_db) - 0.1


# --------------------------------------------------------------------------- on a model
def _data(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_t(4, (1, 3, 32, 32)).astype(np.float32)} for _ in range(count)]


@pytest.fixture(scope="module")
def c2f() -> onnx.ModelProto:
    return build_c2f()


def _compile(
    model: onnx.ModelProto, method: str, data, evaluation=None
) -> tuple[onnx.ModelProto, PassContext]:
    """Compile as qdqc compile does: auto's variants measured on the engine first, then the pipeline."""
    ir_model = load_model(model)
    ctx = PassContext(calibration_data=data)
    manager = PassManager(f"trt-int8{{method={method}}}")
    validation = evaluation if evaluation is not None else data
    validate_method_auto(model, manager, ctx, validation, held_out=evaluation is not None)
    manager.run(ir_model, ctx)
    return to_proto(ir_model), ctx


def _sqnr(model: onnx.ModelProto, float_model: onnx.ModelProto, data) -> float:
    return compare_outputs(run_outputs(float_model, data), run_outputs(model, data)).sqnr_db


def test_auto_on_a_model_is_no_worse_than_the_best_single_method(c2f):
    calib = _data(8, seed=3)
    singles = {}
    for method in DEFAULT_CANDIDATES:
        compiled, _ = _compile(c2f, method, calib)
        singles[method] = _sqnr(compiled, c2f, calib)
    compiled, _ = _compile(c2f, "auto", calib)
    record = json.loads({p.key: p.value for p in compiled.metadata_props}[AUTO_METADATA_KEY])
    assert record["validated"] and record["samples"] == len(calib)
    assert record["validation_data"] == "calibration"
    ends = {v["name"]: v["end_sqnr_db"] for v in record["variants"]}
    assert set(ends) == set(DEFAULT_CANDIDATES) | {MIX}
    measured = _sqnr(compiled, c2f, calib)
    # validated on the same data: what auto kept is at least the best single method (fold-scales and the
    # rest of the pipeline leave the numbers as in the validated variant)
    assert measured >= max(singles.values()) - 0.05
    assert measured == pytest.approx(ends[record["chosen"]], abs=0.05)
    # every global candidate was validated on the end metric, as the real pipeline compiles it (the engine
    # compiles each variant with the pipeline), not only the best local score
    for method, sqnr in singles.items():
        assert ends[method] == pytest.approx(sqnr, abs=1e-3)
    assert record["chosen"] == max(ends, key=lambda name: (ends[name], name != MIX))
    # on other data than it chose on, within half a dB of the best single method
    held_out = _data(8, seed=4)
    best_single = max(_sqnr(_compile(c2f, m, calib)[0], c2f, held_out) for m in DEFAULT_CANDIDATES)
    assert _sqnr(compiled, c2f, held_out) >= best_single - 0.5


def test_per_tensor_mix_respects_scale_groups(c2f):
    calib = _data(4, seed=5)
    ir_model = load_model(c2f)
    PassManager("prepare,place-qdq").run(ir_model, PassContext())
    ctx = PassContext(calibration_data=calib)
    PassManager("calibrate{method=max}").run(ir_model, ctx)
    stats = ctx.calibration_stats
    groups = [[v.name for v in g if v.name in stats] for g in scale_groups(ir_model.graph)]
    groups = [g for g in groups if len(g) > 1]
    assert groups, "the C2f Concat/Split form a scale group"
    names = sorted(name for name in stats if any(name in g for g in groups))
    candidates = [parse_method_spec(text) for text in DEFAULT_CANDIDATES]

    def alone(tolerance: float) -> dict[str, int]:
        amaxes = {name: [compute_amax(stats[name], spec) for spec in candidates] for name in names}
        return {name: choose_for_tensor(stats[name], amaxes[name], tolerance).chosen for name in names}

    # a tolerance at which the members, each alone, would choose different methods
    tolerance = next(
        t for t in (0.0, 0.1, 0.2, 0.35, 0.5, 1.0) if any(len({alone(t)[n] for n in g}) > 1 for g in groups)
    )
    options = AutoOptions.of(parse_method_spec(f"auto{{validate=false,tolerance={tolerance}}}"))
    outcome = choose_auto(ir_model, stats, {}, names, options, None, logging.getLogger("test"))
    for group in groups:
        assert len({outcome.mix_methods[name] for name in group}) == 1, group


def test_auto_without_the_engine_warns_and_keeps_the_mix(c2f, caplog):
    ir_model = load_model(c2f)
    with caplog.at_level(logging.WARNING, logger="qdqc"):
        PassManager("trt-int8{method=auto}").run(ir_model, PassContext(calibration_data=_data(2, seed=12)))
    assert "was not validated" in caplog.text
    record = json.loads(ir_model.metadata_props[AUTO_METADATA_KEY])
    assert record["chosen"] == MIX and not record["validated"]


def test_auto_output_is_byte_identical(c2f, tmp_path):
    calib = _data(4, seed=6)
    first, _ = _compile(c2f, "auto", calib)
    second, _ = _compile(c2f, "auto", calib)
    assert first.SerializeToString() == second.SerializeToString()


def test_cache_without_data_warns_and_keeps_the_unvalidated_mix(c2f, caplog):
    calib = _data(4, seed=7)
    _, ctx = _compile(c2f, "max", calib)
    ir_model = load_model(c2f)
    with caplog.at_level(logging.INFO, logger="qdqc"):
        manager = PassManager("trt-int8{method=auto}")
        cached = PassContext(calibration_stats=ctx.calibration_stats)
        assert validate_method_auto(c2f, manager, cached, None) is None
        manager.run(ir_model, cached)
    assert "no data to validate on" in caplog.text
    record = json.loads(ir_model.metadata_props[AUTO_METADATA_KEY])
    assert record["chosen"] == MIX and not record["validated"]
    assert "local SQNR dB" in caplog.text  # the per-method table at info level


def test_cli_method_auto_bad_candidate_is_one_line(tmp_path, capsys, c2f):
    model = tmp_path / "m.onnx"
    onnx.save(c2f, model)
    np.save(tmp_path / "calib.npy", np.stack([d["input"][0] for d in _data(2, seed=8)]))
    code = main(
        ["compile", str(model), "--calib", str(tmp_path / "calib.npy"), "--method", "auto{candidates=[kl]}"]
        + ["-o", str(tmp_path / "out.onnx")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("qdqc: error:") and "'kl'" in err and "Traceback" not in err


def test_cli_eval_feeds_the_validation(tmp_path, capsys, c2f):
    model = tmp_path / "m.onnx"
    onnx.save(c2f, model)
    np.save(tmp_path / "calib.npy", np.stack([d["input"][0] for d in _data(4, seed=9)]))
    np.save(tmp_path / "eval.npy", np.stack([d["input"][0] for d in _data(3, seed=10)]))
    out = tmp_path / "out.onnx"
    base = ["-q", "compile", str(model), "--calib", str(tmp_path / "calib.npy"), "--no-check", "-o", str(out)]
    summary = tmp_path / "summary.json"
    assert (
        main(
            [*base, "--method", "auto", "--eval", str(tmp_path / "eval.npy"), "--summary-json", str(summary)]
        )
        == 0
    )
    record = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}[AUTO_METADATA_KEY])
    assert record["validated"] and record["samples"] == 3  # the eval data's three samples, not calib's four
    assert record["validation_data"] == "evaluation"
    assert json.loads(summary.read_text())["calibration_auto"] == record
    assert sum(record["tensors_per_method"].values()) == len(record["methods"]) > 0
    capsys.readouterr()
    assert main([*base, "--method", "auto", "--eval", str(tmp_path / "missing.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qdqc: error:") and "missing.npy" in err and "Traceback" not in err


def test_auto_spec_in_a_pipeline_prints_back_and_a_second_run_changes_nothing(c2f):
    manager = PassManager("trt-int8{method=auto{candidates=[max,mse],tolerance=0.5}}")
    assert PassManager(manager.pipeline_text).pipeline_text == manager.pipeline_text
    assert "calibrate{method=" in manager.pipeline_text and "tolerance=0.5" in manager.pipeline_text
    ir_model = load_model(c2f)
    PassManager("prepare,place-qdq").run(ir_model, PassContext())
    ctx = PassContext(calibration_data=_data(4, seed=11))
    first = PassManager("calibrate{method=auto{candidates=[max,mse]}}").run(ir_model, ctx)[0]
    second = PassManager("calibrate{method=auto{candidates=[max,mse]}}").run(ir_model, ctx)[0]
    assert first.modified and not second.modified
    counted = {key: n for key, n in first.statistics.items() if key.startswith("auto-tensors:")}
    assert set(counted) <= {"auto-tensors:max", "auto-tensors:mse"}
    assert sum(counted.values()) == first.statistics["num-tensors-calibrated"]


def test_score_metric_validates_on_the_task_metric():
    from pathlib import Path

    import qdq_compiler
    from qdq_compiler.calib import open_calibration_data

    folder = Path(qdq_compiler.__file__).parent / "data" / "classifier"  # its metadata: kind classifier
    float_model = onnx.load(folder / "classifier.onnx")
    data = open_calibration_data(str(folder / "calib"), float_model, limit=6)
    ir_model = load_model(float_model)
    ctx = PassContext(calibration_data=data)
    manager = PassManager("trt-int8{method=auto{score=metric,candidates=[max,mse,percentile{p=99.9}]}}")
    validate_method_auto(float_model, manager, ctx, EvalSource(str(folder / "calib"), limit=6))
    manager.run(ir_model, ctx)
    record = json.loads(ir_model.metadata_props[AUTO_METADATA_KEY])
    assert record["metric"] == "top-1" and record["samples"] == 6
    metrics = {v["name"]: v["end_metric"] for v in record["variants"]}
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    kept = record["chosen"]
    # the kept variant has the best metric; among those, the best SQNR
    best = max(metrics.values())
    assert metrics[kept] == best
    sqnr = {v["name"]: v["end_sqnr_db"] for v in record["variants"]}
    assert sqnr[kept] == max(sqnr[name] for name, value in metrics.items() if value == best)


def test_statistics_without_a_histogram_are_a_method_error_not_a_crash():
    stats = TensorStats(histogram=False)
    stats.update(np.ones(4, np.float32))
    with pytest.raises(CalibrationMethodError, match="without a histogram"):
        quantization_errors(stats, [1.0])

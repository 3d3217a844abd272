"""The fallback search (`qdqc compile --target-sqnr / --max-metric-drop`), the evaluation engine's executors
and calibration statistics collected in shards and merged."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_sensitivity import PLANTED, WITHOUT_EQUALIZE, _planted_model, _samples

from qdq_compiler.accuracy import compare_outputs, run_outputs
from qdq_compiler.calib import collect_statistics
from qdq_compiler.cli import main
from qdq_compiler.quant.auto_method import AUTO_METADATA_KEY
from qdq_compiler.search.distributed import collect_sharded, local_shard_runner
from qdq_compiler.search.engine import Measurement, Variant
from qdq_compiler.search.fallback import Goal, Unit, search_fallback


def _two_conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["y"], ["z"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("exact", [False, True])
def test_statistics_in_shards_merge_to_the_one_pass_statistics_exactly(exact):
    model = _two_conv_model()
    rng = np.random.default_rng(1)
    batches = [{"x": np.zeros((1, 3, 8, 8), np.float32)}]  # the first batch leaves the ranges unset
    for index in range(1, 30):
        scale = 5000.0 if index == 9 else 200.0 if index == 20 else 1.0 + index % 4  # > 32x: pair merges
        batches.append({"x": (rng.standard_normal((1, 3, 8, 8)) * scale).astype(np.float32)})
    names = ["x", "y", "z"]
    one_pass = collect_statistics(model, names, batches, num_bins=64, exact=exact, workers=1)
    sharded = collect_sharded(
        model, names, batches, local_shard_runner(model), num_bins=64, exact=exact, shard_batches=3
    )
    if not exact:
        assert one_pass["x"].base < 64  # the growth merged bin pairs: shards merged different times
    for name in names:
        ours, reference = sharded[name], one_pass[name]
        assert np.array_equal(ours.hist, reference.hist), name
        assert (ours.count, ours.min, ours.max, ours.range, ours.base, ours.binning) == (
            reference.count,
            reference.min,
            reference.max,
            reference.range,
            reference.base,
            reference.binning,
        )


def _fake(layers: tuple[str, ...], sqnr: float, share: float = 1.0) -> Measurement:
    return Measurement(Variant(layers), sqnr, {"y": sqnr}, None, share, layers, "")


def test_greedy_remeasures_the_cumulative_model_and_drops_what_is_not_needed():
    """No layer alone reaches 30 dB and the ranking's best (c) is useless once a and b are float: the
    search must measure combinations, and drop c again."""
    units = [Unit("a", ("a",), 10), Unit("b", ("b",), 10), Unit("c", ("c",), 50), Unit("d", ("d",), 1)]

    def sqnr(layers: set[str]) -> float:
        value = 20.0
        if "c" in layers:
            value += 4.0 if not {"a", "b"} <= layers else 0.0
        value += 3.0 * len(layers & {"a", "b"})
        value += 5.0 if {"a", "b"} <= layers else 0.0
        return value

    calls: list[int] = []

    def measure(variants):
        calls.append(len(variants))
        return [_fake(v.float_layers, sqnr(set(v.float_layers))) for v in variants]

    result = search_fallback(None, units, Goal("sqnr", 30.0), measure, _fake((), 20.0), beam=2)
    assert result.reached and set(result.chosen) == {"a", "b"}
    assert result.final.sqnr_db == pytest.approx(31.0)
    phases = [step.phase for step in result.steps]
    assert phases[0] == "baseline" and "add" in phases
    assert result.evaluations == 1 + sum(calls)
    assert all(step.reached == (step.sqnr_db >= 30.0) for step in result.steps)


def test_the_budget_bounds_the_evaluations_and_an_unreachable_target_is_reported():
    units = [Unit(name, (name,), 1) for name in "abcdef"]

    def measure(variants):
        return [_fake(v.float_layers, 20.0 + len(v.float_layers)) for v in variants]

    result = search_fallback(None, units, Goal("sqnr", 99.0), measure, _fake((), 20.0), budget=9)
    assert not result.reached and result.evaluations == 9 and result.budget_spent


def test_scale_groups_are_units():
    """Two convs reading one Concat: its scale group is a unit of both."""
    from qdq_compiler.ir import load_model
    from qdq_compiler.pm import PassContext, PassManager
    from qdq_compiler.search.fallback import fallback_units

    rng = np.random.default_rng(2)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), f"w{i}")
        for i in range(4)
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w1"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
        helper.make_node("Slice", ["cat", "s0", "s1", "ax"], ["c0"], name="slice0"),
        helper.make_node("Conv", ["c0", "w2"], ["y0"], name="conv_c", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["cat", "w3x"], ["y1"], name="conv_d", pads=[1, 1, 1, 1]),
    ]
    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([4], np.int64), "s1"),
        numpy_helper.from_array(np.array([1], np.int64), "ax"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w3x"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [
            helper.make_tensor_value_info("y0", TensorProto.FLOAT, [1, 4, 8, 8]),
            helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 4, 8, 8]),
        ],
        inits,
    )
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    ctx = PassContext(calibration_data=[{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}])
    PassManager("trt-int8{quantize-head=true}").run(model, ctx)
    units = fallback_units(model)
    labels = {unit.label: unit.layers for unit in units}
    assert {"conv_a", "conv_b", "conv_c", "conv_d"} <= set(labels)
    groups = [layers for label, layers in labels.items() if label.startswith("group(")]
    assert ("conv_c", "conv_d") in groups  # one scale group: the Concat and the Slice of it
    assert ("conv_a", "conv_b") in groups  # both read x (one quantizer)


def _write_planted(tmp_path):
    model_path, calib_path, eval_path = tmp_path / "m.onnx", tmp_path / "calib.npy", tmp_path / "val.npy"
    onnx.save(_planted_model(), str(model_path))
    np.save(calib_path, _samples(16, 0))
    np.save(eval_path, _samples(8, 1))
    return model_path, calib_path, eval_path


def _compile(tmp_path, model_path, calib_path, eval_path, out: str, *extra: str) -> int:
    args = ["compile", str(model_path), "--calib", str(calib_path), "--eval", str(eval_path)]
    return main([*args, "-o", str(tmp_path / out), "--no-check", *extra])


def test_compile_target_sqnr_keeps_the_planted_layer_float_and_reaches_the_target(tmp_path, capsys):
    model_path, calib_path, eval_path = _write_planted(tmp_path)
    plain_args = ["-q", "compile", str(model_path), "--calib", str(calib_path), "--no-check"]
    plain_args += ["--pipeline", WITHOUT_EQUALIZE]  # equalize repairs the planted layer (test_sensitivity)
    assert main([*plain_args, "-o", str(tmp_path / "plain.onnx")]) == 0
    batches = [{"x": _samples(8, 1)}]
    reference = run_outputs(onnx.load(model_path), batches)
    plain = compare_outputs(reference, run_outputs(onnx.load(tmp_path / "plain.onnx"), batches)).sqnr_db
    target = plain + 10.0
    capsys.readouterr()
    args = ("--target-sqnr", f"{target:.2f}", "--workers", "1")
    assert main(["compile", str(model_path), "--calib", str(calib_path), "--eval", str(eval_path),
                 "--pipeline", WITHOUT_EQUALIZE, "-o", str(tmp_path / "fb.onnx"), "--no-check",
                 *args]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert f"--exclude {PLANTED}" in printed and "reached" in printed
    compiled = onnx.load(tmp_path / "fb.onnx")
    measured = compare_outputs(reference, run_outputs(compiled, batches)).sqnr_db
    assert measured >= target  # measured again here, on the written model
    pipeline = {p.key: p.value for p in compiled.metadata_props}["qdq_compiler.pipeline"]
    assert f"exclude=[{PLANTED}" in pipeline


def test_compile_max_metric_drop_on_top1_agreement(tmp_path, capsys):
    model_path, calib_path, eval_path = _write_planted(tmp_path)
    # the planted model's [N,4,8,8] output fits no kind: --metric needs a kind; use a [N,C] view instead
    model = _planted_model()
    graph = model.graph
    graph.node.append(helper.make_node("ReduceMean", ["y"], ["scores"], name="pool", axes=[2, 3], keepdims=0))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4]))
    onnx.save(model, str(model_path))
    code = _compile(
        tmp_path, model_path, calib_path, eval_path, "out.onnx", "--max-metric-drop", "0", "--workers", "1"
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed
    reference = run_outputs(onnx.load(model_path), [{"x": _samples(8, 1)}])["scores"].argmax(1)
    got = run_outputs(onnx.load(tmp_path / "out.onnx"), [{"x": _samples(8, 1)}])["scores"].argmax(1)
    assert np.array_equal(reference, got)  # drop 0: every sample keeps FP32's class


def test_unreachable_target_is_one_line_and_exit_1(tmp_path, capsys):
    model_path, calib_path, eval_path = _write_planted(tmp_path)
    code = _compile(
        tmp_path, model_path, calib_path, eval_path, "x.onnx", "--target-sqnr", "300", "--budget", "5"
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qdqc: error: target not reached: SQNR >= 300 dB")
    assert "budget spent" in err[0]
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "configures the fallback search: give --target-sqnr"),
        (["--target-sqnr", "30", "--max-metric-drop", "0.01"], "two targets"),
        (["--target-sqnr", "30", "--labels", "l.json"], "go with --max-metric-drop"),
    ],
)
def test_misplaced_recovery_flags_are_refused(tmp_path, capsys, extra, message):
    model_path, calib_path, eval_path = _write_planted(tmp_path)
    assert _compile(tmp_path, model_path, calib_path, eval_path, "x.onnx", *extra) == 2
    assert message in capsys.readouterr().err


def test_same_output_bytes_in_process_in_a_pool_and_on_ray(tmp_path):
    """The choice and the written model do not depend on the executor or the number of workers."""
    model_path, calib_path, eval_path = _write_planted(tmp_path)
    target = ("--target-sqnr", "35", "--budget", "12")
    outputs = {"inproc.onnx": ["--workers", "1"], "pool.onnx": ["--workers", "2"]}
    if importlib.util.find_spec("ray") is not None:
        outputs["ray.onnx"] = ["--ray", "--workers", "2"]  # a local Ray instance of 2 CPUs, statistics too
    for name, flags in outputs.items():
        assert _compile(tmp_path, model_path, calib_path, eval_path, name, *target, *flags) == 0, name
    written = {name: (tmp_path / name).read_bytes() for name in outputs}
    assert len(set(written.values())) == 1, {name: len(data) for name, data in written.items()}
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install -e '.[ray]'): the Ray executor was not compared")


def test_method_auto_and_sensitivity_do_not_depend_on_the_executor(tmp_path, capsys):
    """compile --method auto writes the same bytes (the same choice) and sensitivity prints the same report
    in-process, with a pool of 2 and on a local Ray instance."""
    model_path, calib_path, eval_path = _write_planted(tmp_path)
    executors = {"inproc": ["--workers", "1"], "pool": ["--workers", "2"]}
    if importlib.util.find_spec("ray") is not None:
        executors["ray"] = ["--ray", "--workers", "2"]
    written, reports = {}, {}
    for name, flags in executors.items():
        assert (
            _compile(tmp_path, model_path, calib_path, eval_path, f"{name}.onnx", "--method", "auto", *flags)
            == 0
        )
        written[name] = (tmp_path / f"{name}.onnx").read_bytes()
        capsys.readouterr()
        args = ["-q", "sensitivity", str(model_path), "--calib", str(calib_path), "--eval", str(eval_path)]
        assert main([*args, "--method", "auto", "--top", "2", "--json", *flags]) == 0
        reports[name] = capsys.readouterr().out
    assert len(set(written.values())) == 1, {name: len(data) for name, data in written.items()}
    assert len(set(reports.values())) == 1
    record = json.loads(
        {p.key: p.value for p in onnx.load(tmp_path / "inproc.onnx").metadata_props}[AUTO_METADATA_KEY]
    )
    assert record["validated"] and record["validation_data"] == "evaluation" and record["samples"] == 8
    report = json.loads(reports["inproc"])
    assert len(report["cumulative"]) == 2 and report["layers"]
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install -e '.[ray]'): the Ray executor was not compared")


CLOSENESS_SCRIPT = """
import numpy as np
from qdq_compiler.evaluation.metrics import Closeness
rng = np.random.default_rng(0)
ref = rng.standard_normal(1_000_003).astype(np.float32)
test = ref + rng.standard_normal(ref.size).astype(np.float32) * 0.01
closeness = Closeness("y")
closeness.add(ref, test)
print(repr(closeness.signal), repr(closeness.noise), repr(closeness.dot), repr(closeness.test_power))
"""


def test_closeness_does_not_depend_on_the_blas_thread_count():
    """A variant's SQNR is the same in a Ray worker (one BLAS thread) and in a pool worker (one per core):
    OpenBLAS splits a long dot product by thread, which changed the last bits."""
    import os
    import subprocess
    import sys

    printed = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        done = subprocess.run(
            [sys.executable, "-c", CLOSENESS_SCRIPT], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        printed.add(done.stdout)
    assert len(printed) == 1, printed


def test_workers_reading_the_data_measure_what_a_list_of_batches_measures(tmp_path):
    """EvalSource (each worker reads --eval batch by batch) and batches held in the setup: same numbers."""
    from qdq_compiler.cli_options import prepare_pipeline
    from qdq_compiler.evaluation.data import open_eval_data
    from qdq_compiler.pm import load_passes
    from qdq_compiler.search.engine import EvalSource, Evaluator, build_setup

    model_path, calib_path, eval_path = _write_planted(tmp_path)
    load_passes()
    opts = {"calib": str(calib_path), "calib_cache": None, "batch_size": None, "calib_limit": None}
    float_proto = onnx.load(model_path)
    measured = []
    for source in ("list", "source"):
        manager, ctx = prepare_pipeline(str(model_path), WITHOUT_EQUALIZE, opts, quiet=True)
        if source == "list":
            batches = list(open_eval_data(str(eval_path), float_proto, limit=6).batches())
            setup, _ = build_setup(float_proto, manager, ctx, batches)
        else:
            setup, _ = build_setup(float_proto, manager, ctx, EvalSource(str(eval_path), limit=6))
            assert isinstance(setup.batches, EvalSource)  # no inputs kept in the setup
        assert setup.samples == 6
        evaluator = Evaluator(setup)
        measured.append([evaluator(Variant(layers)) for layers in [(), (PLANTED,)]])
    assert measured[0] == measured[1]
    assert measured[0][1].sqnr_db > measured[0][0].sqnr_db + 10  # the planted layer float pays
    # the all-INT8 variant is what compile writes: its SQNR on the same 6 samples, measured here
    plain_args = ["-q", "compile", str(model_path), "--calib", str(calib_path), "--no-check"]
    plain_args += ["--pipeline", WITHOUT_EQUALIZE]  # equalize repairs the planted layer (test_sensitivity)
    assert main([*plain_args, "-o", str(tmp_path / "plain.onnx")]) == 0
    batches = [{"x": _samples(8, 1)[:6]}]
    reference = run_outputs(float_proto, batches)
    plain = compare_outputs(reference, run_outputs(onnx.load(tmp_path / "plain.onnx"), batches))
    assert measured[0][0].sqnr_db == pytest.approx(plain.sqnr_db, rel=1e-9)


def test_compile_report_draws_the_fallback_search_steps(tmp_path, monkeypatch):
    """compile --target-sqnr --report: the report's fallback curve is the search's steps, baseline first."""
    import qdq_compiler.cli_recovery as cli_module
    from qdq_compiler.report.collect import fallback_from_search

    pytest.importorskip("matplotlib", reason="--report draws with matplotlib (the report extra)")
    model_path, calib_path, eval_path = _write_planted(tmp_path)
    seen = []
    original = cli_module.recover_to_target
    monkeypatch.setattr(
        cli_module, "recover_to_target", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1]
    )
    report = tmp_path / "report"
    code = main(["-q", "compile", str(model_path), "--calib", str(calib_path), "--eval", str(eval_path),
                 "--pipeline", WITHOUT_EQUALIZE, "-o", str(tmp_path / "fb.onnx"), "--no-check",
                 "--target-sqnr", "30", "--workers", "1", "--report", str(report)])  # fmt: skip
    assert code == 0 and seen and seen[0] is not None
    curve = fallback_from_search(seen[0])
    assert curve.steps[0].label == "all INT8" and len(curve.steps) == len(seen[0].steps) >= 2
    assert [step.metric for step in curve.steps] == [step.sqnr_db for step in seen[0].steps]
    assert any(PLANTED in step.label for step in curve.steps[1:])
    html = (report / "index.html").read_text()
    assert "img/fallback.png" in html and "0: all INT8" in html
    assert (report / "img" / "fallback.png").stat().st_size > 1000


def test_a_worker_holds_one_batch_of_one_variants_outputs(tmp_path, monkeypatch):
    """The memory rule: besides the float cache, a worker keeps no more than one batch of one variant's
    outputs (and input batches read from --eval) alive, across batches and across variants."""
    import gc
    import weakref

    from qdq_compiler.cli_options import prepare_pipeline
    from qdq_compiler.pm import load_passes
    from qdq_compiler.search import engine
    from qdq_compiler.search.engine import EvalSource, Evaluator, build_setup

    model_path, calib_path, eval_path = _write_planted(tmp_path)
    load_passes()
    opts = {"calib": str(calib_path), "calib_cache": None, "batch_size": 2, "calib_limit": None}
    manager, ctx = prepare_pipeline(str(model_path), WITHOUT_EQUALIZE, opts, quiet=True)
    setup, _ = build_setup(onnx.load(model_path), manager, ctx, EvalSource(str(eval_path), batch_size=2))
    assert len(setup.reference) == 4  # the float cache: 8 samples in batches of 2
    alive: list[weakref.ref] = []
    most = []

    class Watched(engine.ModelRunner):
        def __call__(self, batch):
            gc.collect()
            most.append(sum(ref() is not None for ref in alive))  # earlier batches' arrays still held
            outputs = super().__call__(batch)
            alive.extend(weakref.ref(value) for value in [*outputs.values(), *batch.values()])
            return outputs

    monkeypatch.setattr(engine, "ModelRunner", Watched)
    evaluator = Evaluator(setup)
    for layers in [(), (PLANTED,), ()]:
        evaluator(Variant(layers))
    gc.collect()
    assert len(most) == 12 and len(alive) == 24  # 3 variants x 4 batches, one output and one input each
    assert max(most) <= 2  # at most the previous batch's output and input, while the next one runs
    assert sum(ref() is not None for ref in alive) == 0  # nothing held once a variant is measured

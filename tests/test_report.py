"""`--report DIR`: the numbers the report shows (against the float model in onnxruntime and the compiled
model's scales), the files it writes, and the one-line error without matplotlib."""

from __future__ import annotations

import re
import sys

import numpy as np
import onnx
import pytest
from helpers import concat_of_distant_ranges
from onnx import helper
from test_silent_errors_abc import _positive_samples

from qdq_compiler.accuracy.numerics import run_outputs
from qdq_compiler.calib import model_input_specs
from qdq_compiler.cli import main
from qdq_compiler.ir import load_model
from qdq_compiler.models import TEST_MODELS
from qdq_compiler.pipelines import TRT_INT8
from qdq_compiler.pm import PassContext, PassManager, load_passes
from qdq_compiler.quant.grid import INT8_MAX
from qdq_compiler.report import FallbackCurve, FallbackStep, RankedLayer, ReportData, write_report
from qdq_compiler.report.collect import activation_amax, calibration_plan, compile_report, weight_ranges
from qdq_compiler.report.data import clipped_fraction

pytest.importorskip("matplotlib", reason="--report draws with matplotlib (the report extra, also in dev)")

PNG = b"\x89PNG\r\n\x1a\n"


def test_clipped_fraction_is_the_share_of_values_above_amax() -> None:
    values = np.abs(np.random.default_rng(0).standard_normal(100_000))
    width = 0.01
    counts, _ = np.histogram(values, bins=np.arange(0.0, values.max() + 2 * width, width))
    for amax in (0.5, 1.0, 2.5):  # on bin edges: exact
        assert clipped_fraction(counts, width, amax) == pytest.approx(float(np.mean(values > amax)), abs=1e-9)
    inside = clipped_fraction(counts, width, 1.005)  # halfway through a bin: half of it counts
    assert np.mean(values > 1.01) < inside < np.mean(values > 1.0)
    assert clipped_fraction(counts, width, 100.0) == 0.0


def _intermediates(model: onnx.ModelProto, names: list[str], samples: np.ndarray) -> dict[str, np.ndarray]:
    """The float model's tensors ``names`` over the samples (as extra graph outputs, in onnxruntime)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
    outputs = run_outputs(probe, [{"x": samples[i : i + 1]} for i in range(len(samples))])
    return {name: outputs[name] for name in names}


@pytest.fixture(scope="module")
def compiled_case():
    """The Concat-of-distant-ranges model compiled by trt-int8 (one requantization left), its context."""
    load_passes()
    model = concat_of_distant_ranges(1e4)
    samples = _positive_samples()
    # without equalize (on in trt-int8): the weight-range test compares the report with the input's weights
    manager = PassManager(TRT_INT8.replace("equalize,", ""))
    ctx = PassContext(calibration_data=samples)
    compiled = load_model(model)
    manager.run(compiled, ctx)
    return model, samples, manager, ctx, compiled


def test_report_numbers_match_the_float_model_and_the_compiled_scales(compiled_case) -> None:
    model, samples, manager, ctx, compiled = compiled_case
    data = compile_report(
        "m.onnx", "out.onnx", compiled, ctx.calibration_stats, calibration_plan(manager.passes), None
    )
    used = activation_amax(compiled)
    assert set(used) == {"x", "a", "cat"}  # conv4 is the output layer: float
    values = _intermediates(model, ["a", "cat"], samples)
    values["x"] = samples
    histograms = {item.tensor: item for item in data.histograms}
    assert set(histograms) == set(used)
    for name, item in histograms.items():
        actual = np.abs(values[name])
        assert item.amax == used[name]
        assert item.candidates["max"] == pytest.approx(float(actual.max()), rel=1e-6)  # max: the reach
        assert set(item.candidates) == {"max", "percentile", "entropy", "mse"}
        assert item.method == "percentile"  # the default method
        step = item.bin_width  # a value within one bin of amax may count either way
        assert (
            np.mean(actual > item.amax + step) - 1e-9
            <= item.clipped
            <= np.mean(actual > item.amax - step) + 1e-9
        )
    rows = {row.layer: row for row in data.layers}
    assert list(rows) == ["conv1", "conv2", "conv3", "conv4"]
    assert rows["conv3"].input_tensor == "cat" and rows["conv3"].amax == used["cat"]
    assert rows["conv2"].amax == used["a"] < used["cat"]  # 'a' keeps its own scale, far below the Concat's
    assert rows["conv2"].scale_group == "group 1 (2 tensors), own scale"
    assert rows["conv3"].scale_group == "group 1 (2 tensors)"
    assert sum(row.mac_share or 0.0 for row in rows.values()) == pytest.approx(1.0)
    assert [row.precision for row in rows.values()] == ["int8", "int8", "int8", "float"]
    assert "output layer" in rows["conv4"].reason and rows["conv4"].amax is None
    float_layer, requant = data.graphs
    assert float_layer.title == "conv4" and [n.kind for n in float_layer.nodes if n.focus] == ["float"]
    assert requant.title.startswith("requantization ") and any(n.focus for n in requant.nodes)
    assert {"Concat", "Q", "DQ"} <= {n.label.split("\n")[0] for n in requant.nodes}


def test_weight_ranges_are_the_float_weights_within_a_quantization_step(compiled_case) -> None:
    model, _, _, _, compiled = compiled_case
    floats = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    ranges = {item.layer: item for item in weight_ranges(compiled, count=10)}
    assert set(ranges) == {"conv1", "conv2", "conv3", "conv4"}
    for layer, weight in (("conv1", "w1"), ("conv2", "w2"), ("conv3", "w3"), ("conv4", "w4")):
        channels = floats[weight].reshape(floats[weight].shape[0], -1)
        step = np.abs(channels).max(axis=1) / INT8_MAX  # per-channel symmetric INT8
        assert np.all(np.abs(ranges[layer].minimum - channels.min(axis=1)) <= step / 2 + 1e-7)
        assert np.all(np.abs(ranges[layer].maximum - channels.max(axis=1)) <= step / 2 + 1e-7)
    spreads = [item.spread for item in weight_ranges(compiled, count=10)]
    assert spreads == sorted(spreads, reverse=True)


def _images(index) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', index.read_text())


def test_write_report_from_plain_data_draws_the_fallback_steps(tmp_path) -> None:
    steps = [
        FallbackStep("all INT8", 30.0, 0.98),
        FallbackStep("+ conv7", 33.5, 0.95),
        FallbackStep("+ g2", 34.0, 0.9),
    ]
    data = ReportData(
        "search",
        [("model", "m.onnx")],
        ranking=[RankedLayer("conv7", 3.5, 0.03), RankedLayer("conv2", -0.1, 0.2)],
        fallback=FallbackCurve("mAP@0.5", steps),
    )
    index = write_report(tmp_path / "r", data)
    assert _images(index) == ["img/ranking.png", "img/fallback.png"]
    for src in _images(index):
        assert (index.parent / src).read_bytes().startswith(PNG)
    text = index.read_text()
    assert "0: all INT8; 1: + conv7; 2: + g2" in text and "http" not in text.replace("http-equiv", "")
    data.ranking = []
    write_report(tmp_path / "r", data)  # a second report into the same folder drops the stale picture
    assert not (tmp_path / "r" / "img" / "ranking.png").exists()


def _as_classifier(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its output y pooled to logits [1, C] (a classifier, for `qdqc eval`)."""
    model.graph.node.extend(
        [
            helper.make_node("GlobalAveragePool", ["y"], ["pooled"], name="pool"),
            helper.make_node("Flatten", ["pooled"], ["logits"], name="flatten"),
        ]
    )
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 8]))
    return model


def _save_case(tmp_path):
    model_path, calib = tmp_path / "m.onnx", tmp_path / "calib.npy"
    onnx.save_model(_as_classifier(concat_of_distant_ranges(1e4)), model_path)
    np.save(calib, _positive_samples())
    return str(model_path), str(calib)


def test_compile_sensitivity_and_eval_write_reports(tmp_path, capsys) -> None:
    model, calib = _save_case(tmp_path)
    out = str(tmp_path / "out.onnx")
    assert (
        main(["compile", model, "--calib", calib, "-o", out, "--report", str(tmp_path / "c"), "--timing"])
        == 0
    )
    captured = capsys.readouterr()
    assert f"wrote report {tmp_path / 'c' / 'index.html'}" in captured.out
    assert re.search(r"\d+\.\d ms +\d+\.\d% +\(report\)", captured.err), captured.err  # its time in --timing
    images = _images(tmp_path / "c" / "index.html")
    assert len([src for src in images if "hist-" in src]) == 3 and "img/graph-000.png" in images
    args = ["sensitivity", model, "--calib", calib, "--eval-limit", "2", "--top", "2", "--json"]
    assert main([*args, "--report", str(tmp_path / "s")]) == 0
    captured = capsys.readouterr()
    assert captured.out.lstrip().startswith("{")  # --json keeps stdout JSON; the report line goes to stderr
    assert "wrote report" in captured.err
    text = (tmp_path / "s" / "index.html").read_text()
    assert '<table class="sortable" id="ranking">' in text and "img/fallback.png" in text
    assert text.count("<tr class=") == 4 + 3  # layer rows, then the 3 INT8 layers ranked
    eval_args = [
        "eval",
        model,
        out,
        "--data",
        calib,
        "--kind",
        "classifier",
        "--report",
        str(tmp_path / "e"),
    ]
    assert main(eval_args) == 0
    text = (tmp_path / "e" / "index.html").read_text()
    assert "outputs, INT8 against FP32" in text and "img/graph-000.png" in text
    for folder in ("c", "s", "e"):
        for src in _images(tmp_path / folder / "index.html"):
            assert (tmp_path / folder / src).read_bytes().startswith(PNG)


def test_report_without_matplotlib_is_one_line_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    model, calib = _save_case(tmp_path)
    out = tmp_path / "out.onnx"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert main(["compile", model, "--calib", calib, "-o", str(out), "--report", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qdqc: error: --report draws its pictures with matplotlib"), (
        err
    )
    assert "pip install 'qdq-compiler[report]'" in err[0]
    assert not out.exists()
    for command in (["sensitivity", model, "--calib", calib], ["eval", model, model, "--data", calib]):
        assert main([*command, "--report", str(tmp_path / "r")]) == 2
        assert capsys.readouterr().err.startswith("qdqc: error: --report draws")


def test_the_same_data_gives_the_same_report_bytes(compiled_case, tmp_path) -> None:
    _, _, manager, ctx, compiled = compiled_case
    plan = calibration_plan(manager.passes)
    for folder in ("a", "b"):
        data = compile_report("m.onnx", "out.onnx", compiled, ctx.calibration_stats, plan, None)
        write_report(tmp_path / folder, data)
    files = sorted(path.relative_to(tmp_path / "a") for path in (tmp_path / "a").rglob("*") if path.is_file())
    assert len(files) == 1 + 3 + 4 + 2  # page, histograms, weight ranges, graph pictures
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("name", ["c2f", "se_block"])
def test_reports_of_other_test_models(name, tmp_path) -> None:
    """Other layer shapes (Split, Mul gates, Gemm-free SE blocks): a row per weighted layer, a histogram
    per calibrated tensor, every picture written."""
    proto = TEST_MODELS[name]()
    (spec,) = model_input_specs(proto)
    samples = np.random.default_rng(0).standard_normal([4, *spec.shape[1:]]).astype(np.float32)
    model, ctx, manager = load_model(proto), PassContext(calibration_data=samples), PassManager("trt-int8")
    manager.run(model, ctx)
    data = compile_report(name, "o", model, ctx.calibration_stats, calibration_plan(manager.passes), None)
    assert [row.layer for row in data.layers] == [n.name for n in model.graph if n.op_type == "Conv"]
    assert {h.tensor for h in data.histograms} == set(activation_amax(model)) != set()
    index = write_report(tmp_path, data)
    images = _images(index)
    assert len(images) == len(data.histograms) + len(data.weight_ranges) + len(data.graphs)
    assert all((tmp_path / src).read_bytes().startswith(PNG) for src in images)

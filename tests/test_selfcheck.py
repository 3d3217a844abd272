"""The numerical self-check after `qdqc compile`: per-output SQNR in the summary and its JSON, warnings that
name the broken output, `--no-check`, `--check-strict`, and where the samples come from."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy import compare_outputs, run_outputs
from qdq_compiler.accuracy.selfcheck import first_samples, format_selfcheck, run_selfcheck
from qdq_compiler.cli import main
from qdq_compiler.ir import count_qdq, load_model
from qdq_compiler.pm import Pass, PassResult, register_pass


@register_pass
class ScaleConvBWeights(Pass):
    """Breaks a compile on purpose: conv_b's weight DequantizeLinear scale times ``factor``."""

    name = "test-scale-conv-b-weights"
    summary = "Multiplies conv_b's weight scale (self-check tests: a deliberately broken compile)."

    @dataclass(frozen=True)
    class Options:
        factor: float = 1.0

    def run(self, model: ir.Model, ctx) -> PassResult:
        conv = next(node for node in model.graph if node.name == "conv_b")
        scale = conv.inputs[1].producer().inputs[1]
        scale.const_value = ir.tensor(scale.const_value.numpy() * np.float32(self.options.factor))
        return PassResult(modified=True)


def _two_branches() -> onnx.ModelProto:
    """x -> conv0 -> relu0, then two branches conv_a -> relu_a -> out_a and conv_b -> relu_b -> out_b."""
    rng = np.random.default_rng(3)
    weights = {"w0": (8, 4), "wa": (8, 8), "wb": (8, 8)}
    inits = [
        numpy_helper.from_array((rng.standard_normal((*shape, 3, 3)) * 0.25).astype(np.float32), name)
        for name, shape in weights.items()
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "wa"], ["ca"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["ca"], ["out_a"], name="relu_a"),
        helper.make_node("Conv", ["r0", "wb"], ["cb"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["cb"], ["out_b"], name="relu_b"),
    ]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 8, 8, 8]) for name in ("out_a", "out_b")
    ]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def two(tmp_path):
    """The two-branch model and 8 calibration samples, as files."""
    model, data = tmp_path / "two.onnx", tmp_path / "two.npy"
    onnx.save(_two_branches(), model)
    np.save(data, np.random.default_rng(4).standard_normal((8, 4, 8, 8)).astype(np.float32))
    return model, data


def _compile(two, tmp_path, *extra: str, pipeline: str = "trt-int8") -> tuple[int, Path]:
    model, data = two
    out = tmp_path / "two.int8.onnx"
    args = [
        "compile",
        str(model),
        "-o",
        str(out),
        "--calib",
        str(data),
        "--quantize-head",
        "--pipeline",
        pipeline,
        *extra,
    ]
    return main(args), out


def _selfcheck_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("self-check")]
    assert len(lines) == 1, text
    return lines[0]


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("qdqc: WARNING: self-check")]


def test_summary_line_holds_the_sqnr_of_every_output(two, tmp_path, capsys):
    code, out = _compile(two, tmp_path)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    line = _selfcheck_line(captured.out)
    found = dict(re.findall(r"(out_[ab]) (\d+\.\d+) dB", line))
    assert set(found) == {"out_a", "out_b"}, line
    assert "on 4 sample(s)" in line and not _warnings(captured.err)
    # the printed figures are what onnxruntime gives for the written model on the first 4 samples
    feeds = [{"x": np.load(two[1])[:4]}]
    reference, compiled = (run_outputs(onnx.load(str(path)), feeds) for path in (two[0], out))
    expected = compare_outputs(reference, compiled)
    for name, value in found.items():
        assert float(value) == pytest.approx(expected.per_output[name], abs=0.006)
        assert float(value) > 25.0  # INT8 with calibrated scales on both branches


@pytest.mark.parametrize(
    "factor, problem",
    [
        ("0", "is all zero while the float model's is not"),
        ("nan", "holds NaN or Inf"),
        ("1.5", "below the 10 dB threshold"),  # outputs 1.5x too large: SQNR 20*log10(2) = 6 dB
    ],
)
def test_a_broken_output_is_named_in_one_warning(two, tmp_path, capsys, factor, problem):
    code, _ = _compile(two, tmp_path, pipeline=f"trt-int8,test-scale-conv-b-weights{{factor={factor}}}")
    captured = capsys.readouterr()
    assert code == 0  # a warning by default
    warnings = _warnings(captured.err)
    assert len(warnings) == 1 and "output 'out_b'" in warnings[0] and problem in warnings[0], captured.err
    line = _selfcheck_line(captured.out)
    assert "(1 warning(s))" in line and re.search(r"out_a \d+\.\d+ dB,", line)


def test_the_threshold_is_an_option(two, tmp_path, capsys):
    pipeline = "trt-int8,test-scale-conv-b-weights{factor=1.5}"
    code, _ = _compile(two, tmp_path, "--check-sqnr-min", "5", pipeline=pipeline)
    captured = capsys.readouterr()
    assert code == 0 and not _warnings(captured.err)
    sqnr = float(re.search(r"out_b (\d+\.\d+) dB", captured.out).group(1))
    assert 5.0 < sqnr < 7.0  # 6.02 dB for outputs exactly 1.5x too large, less INT8 noise


def test_check_strict_fails_a_broken_compile_but_keeps_the_model(two, tmp_path, capsys):
    pipeline = "trt-int8,test-scale-conv-b-weights{factor=0}"
    code, out = _compile(two, tmp_path, "--check-strict", pipeline=pipeline)
    err = capsys.readouterr().err
    assert code == 1 and out.exists()
    errors = [line for line in err.splitlines() if line.startswith("qdqc: error:")]
    assert len(errors) == 1 and "--check-strict" in errors[0] and "'out_b'" in errors[0]


def test_check_strict_passes_a_good_compile(two, tmp_path, capsys):
    code, _ = _compile(two, tmp_path, "--check-strict")
    assert code == 0, capsys.readouterr().err


def test_no_check_skips_it(two, tmp_path, capsys):
    json_path = tmp_path / "summary.json"
    pipeline = "trt-int8,test-scale-conv-b-weights{factor=0}"
    code, _ = _compile(two, tmp_path, "--no-check", "--summary-json", str(json_path), pipeline=pipeline)
    captured = capsys.readouterr()
    assert code == 0 and "self-check" not in captured.out and not _warnings(captured.err)
    assert json.loads(json_path.read_text())["self_check"] == {"status": "off"}


def test_no_check_with_a_check_option_is_one_line_error(two, tmp_path, capsys):
    code, out = _compile(two, tmp_path, "--no-check", "--check-strict")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.strip() == "qdqc: error: --check-strict configure the self-check, which --no-check turns off"


def test_summary_json_holds_counts_decisions_and_the_check(two, tmp_path, capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    pipeline = "trt-int8,test-scale-conv-b-weights{factor=0}"
    assert _compile(two, tmp_path, "--summary-json", str(first), pipeline=pipeline)[0] == 0
    code, out = _compile(two, tmp_path, "--summary-json", str(second), pipeline=pipeline)
    assert code == 0 and first.read_bytes() == second.read_bytes()  # no times in it: byte-identical
    umask = os.umask(0)
    os.umask(umask)
    assert first.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal new file, not a private temp file
    text = first.read_text()
    summary = json.loads(text)
    assert text == json.dumps(summary, indent=2, sort_keys=True) + "\n"
    q, dq = count_qdq(load_model(out).graph)
    assert summary["qdq"] == {"QuantizeLinear": q, "DequantizeLinear": dq} and q > 0
    decisions = {d["node"]: d for d in summary["weighted_layers"]["decisions"]}
    assert set(decisions) == {"conv0", "conv_a", "conv_b"} and all(d["int8"] for d in decisions.values())
    assert summary["weighted_layers"]["int8"] == 3 and summary["weighted_layers"]["float"] == 0
    check = summary["self_check"]
    assert check["status"] == "warning" and check["samples"] == 4 and check["sqnr_min_db"] == 10.0
    outputs = {o["name"]: o for o in check["outputs"]}
    assert outputs["out_a"]["problem"] is None and outputs["out_a"]["sqnr_db"] > 25.0
    assert outputs["out_b"]["problem"].startswith("is all zero") and outputs["out_b"]["sqnr_db"] < 1.0
    assert len(check["warnings"]) == 1 and "out_b" in check["warnings"][0]


def test_summary_json_under_a_file_is_refused_before_compiling(two, tmp_path, capsys):
    code, out = _compile(two, tmp_path, "--summary-json", str(two[1] / "s.json"))
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and "is not a folder" in err


def test_summary_json_in_a_missing_folder_is_made_like_an_output(two, tmp_path):
    code, out = _compile(two, tmp_path, "--summary-json", str(tmp_path / "new" / "s.json"))
    assert code == 0 and out.exists()
    assert json.loads((tmp_path / "new" / "s.json").read_text())["self_check"]["outputs"]


def test_cache_only_compile_says_why_it_skipped_and_check_data_runs_it(two, tmp_path, capsys):
    model, data = two
    cache = tmp_path / "two.stats"
    assert main(["-q", "calibrate", str(model), "--calib", str(data), "-o", str(cache)]) == 0
    args = ["compile", str(model), "-o", str(tmp_path / "o.onnx"), "--calib-cache", str(cache)]
    assert main(args) == 0
    assert "self-check: skipped (compiled from --calib-cache without data" in capsys.readouterr().out
    assert main([*args, "--check-data", str(data), "--check-samples", "2"]) == 0
    line = _selfcheck_line(capsys.readouterr().out)
    assert "on 2 sample(s)" in line and re.search(r"out_a \d+\.\d+ dB, out_b \d+\.\d+ dB", line)
    assert main([*args, "--check-strict"]) == 1
    assert "the self-check was skipped" in capsys.readouterr().err


def test_trt_int8_from_qdq_compares_with_the_input_model_given_data(two, tmp_path, capsys):
    code, quantized = _compile(two, tmp_path)
    assert code == 0
    capsys.readouterr()
    args = ["compile", str(quantized), "-o", str(tmp_path / "re.onnx"), "--pipeline", "trt-int8-from-qdq"]
    assert main(args) == 0
    assert "self-check: skipped (this pipeline reads no data" in capsys.readouterr().out
    assert main([*args, "--check-data", str(two[1])]) == 0
    line = _selfcheck_line(capsys.readouterr().out)
    assert "against the input model" in line
    # the same scales in the same places: the re-placed model computes what its input computed
    assert float(re.search(r"out_a (\d+\.\d+|inf) dB", line).group(1)) > 40.0


def test_trt11_with_its_fp16_remainder_is_checked(two, tmp_path, capsys):
    code, out = _compile(two, tmp_path, "--target", "trt11")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    compiled = onnx.load(str(out))
    assert any(init.data_type == TensorProto.FLOAT16 for init in compiled.graph.initializer)
    found = dict(re.findall(r"(out_[ab]) (\d+\.\d+) dB", _selfcheck_line(captured.out)))
    assert set(found) == {"out_a", "out_b"} and min(map(float, found.values())) > 20.0
    assert not _warnings(captured.err)


def test_a_model_ending_in_a_plugin_is_checked_up_to_it(tmp_path, capsys):
    from test_plugin_models import _with_nms

    source, data = tmp_path / "end2end.onnx", tmp_path / "calib.npy"
    onnx.save(_with_nms(True), source)
    np.save(data, np.random.default_rng(6).standard_normal((8, 4, 8, 8)).astype(np.float32))
    args = ["compile", str(source), "--calib", str(data), "--quantize-head", "-o", str(tmp_path / "o.onnx")]
    assert main(args) == 0
    line = _selfcheck_line(capsys.readouterr().out)
    assert "compared before TRT::EfficientNMS_TRT 'nms', which onnxruntime cannot run" in line
    assert re.search(r"boxes \d+\.\d+ dB, scores \d+\.\d+ dB", line), line


# ------------------------------------------------------------------------ the check on hand-built pairs
def _model(body: str, out_type: str = "float[2, 3]") -> onnx.ModelProto:
    return onnx.parser.parse_model(
        f'<ir_version: 8, opset_import: ["" : 17]> g (float[2, 3] x) => ({out_type} y) {{ {body} }}'
    )


REFERENCE = _model("y = Relu(x)")
BATCHES = [{"x": np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]], np.float32)}]


def test_a_constant_output_is_flagged_with_its_value():
    compiled = _model("y = Constant<value = float[2, 3] {3, 3, 3, 3, 3, 3}>()")
    check = run_selfcheck(REFERENCE, compiled, BATCHES)
    assert check.warnings == [
        "self-check: output 'y' is constant (3) while the float model's is not "
        f"(SQNR {check.outputs[0].sqnr_db:.2f} dB)"
    ]
    assert "y " in format_selfcheck(check) and "[constant]" in format_selfcheck(check)


def test_an_equal_model_passes_with_infinite_sqnr():
    check = run_selfcheck(REFERENCE, REFERENCE, BATCHES)
    assert not check.warnings and check.outputs[0].sqnr_db == math.inf and check.samples == 2


def test_a_compiled_model_onnxruntime_cannot_run_is_a_warning():
    broken = _model("y = Relu(x)")
    broken.graph.node[0].op_type = "NoSuchOp"
    check = run_selfcheck(REFERENCE, broken, BATCHES)
    assert len(check.warnings) == 1
    assert check.warnings[0].startswith("self-check: the compiled model: onnxruntime cannot load")


def test_inputs_are_cast_to_what_the_compiled_model_takes():
    fp16 = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> g (float16[2, 3] x) => (float16[2, 3] y) { y = Relu(x) }'
    )
    check = run_selfcheck(REFERENCE, fp16, BATCHES)
    assert not check.warnings and check.outputs[0].sqnr_db == math.inf  # these values are exact in FP16


def test_an_input_the_compiled_model_dropped_is_not_fed():
    two_inputs = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[2, 3] x, float[2, 3] unused) => (float[2, 3] y) '
        "{ y = Relu(x) }"
    )
    feeds = [{**BATCHES[0], "unused": np.zeros((2, 3), np.float32)}]
    check = run_selfcheck(two_inputs, REFERENCE, feeds)
    assert not check.warnings and check.outputs[0].sqnr_db == math.inf


def test_a_reference_with_nan_skips_the_check():
    nan_batches = [{"x": np.array([[np.nan, 1, 2], [3, 4, 5]], np.float32)}]
    check = run_selfcheck(REFERENCE, REFERENCE, nan_batches)
    assert check.skipped == "the float model's output 'y' holds NaN or Inf" and not check.warnings


def test_first_samples_cuts_dynamic_batches_and_keeps_fixed_ones_whole():
    batches = [{"x": np.full((3, 2), i, np.float32)} for i in range(3)]
    cut = first_samples(batches, 4)
    assert [b["x"].shape[0] for b in cut] == [3, 1] and cut[1]["x"][0, 0] == 1
    assert [b["x"].shape[0] for b in first_samples(batches, 4, dynamic_batch=False)] == [3, 3]


def test_a_float_model_onnxruntime_cannot_load_skips_the_check_with_the_reason():
    broken = _model("y = Relu(x)")
    broken.graph.node[0].op_type = "NoSuchOp"
    check = run_selfcheck(broken, REFERENCE, BATCHES)
    assert check.skipped.startswith("the float model: onnxruntime cannot load") and not check.warnings
    assert format_selfcheck(check) == f"self-check: skipped ({check.skipped})"

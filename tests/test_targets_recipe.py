"""The compiled model's own record of its target and recipe, and the commands that read it: lint,
verify-trt, explain, inspect and build (issue 13, deliverables 4 and 5)."""

from __future__ import annotations

import json
import shlex

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.cli import main
from qdq_compiler.errors import PassFailure
from qdq_compiler.examples import image_like_batch
from qdq_compiler.ir import load_model
from qdq_compiler.models import TEST_MODELS
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.targets.lint import lint_model
from qdq_compiler.targets.recipe import IMPORTED, read_recipe, record_target


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The yolov7-tiny test model, float and compiled for trt10 (method max) and trt11 (default method)."""
    root = tmp_path_factory.mktemp("recipe")
    float_path, calib = root / "yolo.onnx", root / "calib.npy"
    onnx.save_model(TEST_MODELS["yolov7_tiny"](), float_path)
    np.save(calib, image_like_batch(4, 160))
    paths = {"float": float_path}
    for target, extra in (("trt11", []), ("trt10", ["--method", "max"])):
        out = root / f"yolo.{target}.onnx"
        args = ["compile", str(float_path), "--calib", str(calib), "--target", target, "-o", str(out)]
        assert main([*args, *extra]) == 0
        paths[target] = out
    return paths


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdqc: error: "), err
    return lines[0]


# ----------------------------------------------------------------------------------------------------
# What the model records
# ----------------------------------------------------------------------------------------------------


def test_compile_records_target_io_method_pipeline_and_version(compiled) -> None:
    import qdq_compiler

    trt11 = read_recipe(load_model(compiled["trt11"]))
    assert (trt11.target, trt11.io_fp16, trt11.calibration) == ("trt11", False, "percentile")
    assert "legalize-trt{target=trt11}" in trt11.pipeline and trt11.version == qdq_compiler.__version__
    trt10 = read_recipe(load_model(compiled["trt10"]))
    assert (trt10.target, trt10.calibration, trt10.trt_major) == ("trt10", "max", 10)
    assert read_recipe(load_model(compiled["float"])).target is None


def test_target_given_in_the_pipeline_text_is_the_one_recorded(compiled, tmp_path) -> None:
    """The target comes from legalize-trt's own options, never from a CLI flag."""
    model = load_model(compiled["trt10"])
    PassManager("upgrade-opset{min=19},legalize-trt{target=trt11,io-fp16=true}").run(model, PassContext())
    recipe = read_recipe(model)
    assert (recipe.target, recipe.io_fp16, recipe.calibration) == ("trt11", True, "max")


def test_imported_scales_are_recorded_as_imported(compiled) -> None:
    model = load_model(compiled["trt10"])
    PassManager("trt-int8-from-qdq").run(model, PassContext())
    recipe = read_recipe(model)
    assert (recipe.calibration, recipe.target) == (IMPORTED, "trt10")
    assert recipe.pipeline.startswith("upgrade-opset") and "import-scales" in recipe.pipeline


# ----------------------------------------------------------------------------------------------------
# lint / verify-trt read the recorded target
# ----------------------------------------------------------------------------------------------------


def float16_scale_model() -> onnx.ModelProto:
    """x(float16) -> Relu -> Q(float16 scale) -> DQ -> y, opset 19, the Relu output's type undeclared."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float16), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"], name="r_Q"),
        helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"], name="r_DQ"),
    ]
    graph = helper.make_graph(
        nodes,
        "f16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def scale_dtype_warnings(model) -> list[str]:
    return [v.node for v in lint_model(model) if v.rule == "scale-dtype"]


def test_float16_scale_warning_follows_the_recorded_target() -> None:
    foreign = load_model(float16_scale_model())
    assert scale_dtype_warnings(foreign) == ["r_Q"]  # not recorded: maybe weakly typed TensorRT 10
    trt10 = load_model(float16_scale_model())
    record_target(trt10, "trt10", False)
    assert scale_dtype_warnings(trt10) == ["r_Q"]
    trt11 = load_model(float16_scale_model())
    record_target(trt11, "trt11", False)
    assert scale_dtype_warnings(trt11) == []  # TensorRT 11 is always strongly typed


def test_verify_trt_reads_the_target_legalize_trt_recorded() -> None:
    strict = "verify-trt{fail-on-warning=true}"
    trt11 = PassManager(f"legalize-trt{{target=trt11}},{strict}")
    trt11.run(load_model(float16_scale_model()), PassContext())
    with pytest.raises(PassFailure, match="verify-trt.*scale-dtype"):
        PassManager(f"legalize-trt{{target=trt10}},{strict}").run(
            load_model(float16_scale_model()), PassContext()
        )


def test_our_trt11_output_lints_clean_also_with_strict(compiled, capsys) -> None:
    capsys.readouterr()
    assert main(["lint", str(compiled["trt11"])]) == 0
    captured = capsys.readouterr()
    assert "0 error(s), 0 warning(s)" in captured.err and "WARNING" not in captured.err
    assert main(["lint", "--strict", str(compiled["trt11"])]) == 0


def test_lint_prints_its_summary_once(tmp_path, capsys) -> None:
    path = tmp_path / "f16.onnx"
    onnx.save_model(float16_scale_model(), path)
    capsys.readouterr()
    assert main(["lint", "--strict", str(path)]) == 1
    captured = capsys.readouterr()
    both = captured.out + captured.err
    assert both.count("warning(s)") == 1, both
    assert captured.out.count("[scale-dtype]") == 1


# ----------------------------------------------------------------------------------------------------
# inspect and explain show the recipe
# ----------------------------------------------------------------------------------------------------


def test_inspect_shows_the_recipe_in_words(compiled, capsys) -> None:
    assert main(["inspect", str(compiled["trt11"])]) == 0
    out = capsys.readouterr().out
    assert "target: trt11 (TensorRT 11, strongly typed" in out
    assert "calibration: percentile" in out and "pipeline: upgrade-opset" in out and "qdqc version: " in out
    assert main(["inspect", str(compiled["float"])]) == 0
    assert "compiled with: nothing recorded" in capsys.readouterr().out


def test_explain_says_what_to_know_before_flashing(compiled, capsys) -> None:
    path = str(compiled["trt11"])
    assert main(["build", path, "--print-trtexec"]) == 0
    trtexec_line = capsys.readouterr().out.strip()
    assert main(["explain", path]) == 0
    out = capsys.readouterr().out
    assert "target: trt11 (TensorRT 11" in out and "calibration: percentile" in out
    assert "pipeline: upgrade-opset" in out and "qdqc version: " in out
    assert "lint: 0 error(s), 0 warning(s)" in out
    assert "INT8 MAC share: " in out and "Requantizations " in out
    assert trtexec_line.startswith("trtexec ") and f"  {trtexec_line}" in out.splitlines()
    layers = str(compiled["trt11"]).removesuffix(".onnx") + ".layers.json"
    assert f"qdqc report-engine {shlex.quote(layers)} --model {shlex.quote(path)}" in out
    assert "compare_with_prediction()" not in out and "trtexec_command()" not in out


def test_explain_json_carries_the_same_fields(compiled, capsys) -> None:
    path = str(compiled["trt11"])
    assert main(["build", path, "--print-trtexec"]) == 0
    trtexec_line = capsys.readouterr().out.strip()
    assert main(["explain", path, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["recipe"]["target"] == "trt11" and data["recipe"]["calibration"] == "percentile"
    assert data["lint"] == {"errors": 0, "warnings": 0}
    assert data["trtexec"] == trtexec_line and data["requantizations"] == []
    assert 0.5 < data["int8_mac_share"] <= 1.0
    assert data["next_step"].startswith("qdqc report-engine ")


def test_explain_on_a_float_model_says_so_and_exits_1(compiled, capsys) -> None:
    for extra in ([], ["--json"]):
        assert main(["explain", str(compiled["float"]), *extra]) == 1
        captured = capsys.readouterr()
        assert "holds no Q/DQ" in one_line_error(captured.err) and "%" not in captured.out


# ----------------------------------------------------------------------------------------------------
# build reads the recipe
# ----------------------------------------------------------------------------------------------------


def trtexec_of(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["build", *args, "--print-trtexec"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_build_defaults_to_the_recorded_tensorrt_version(compiled, capsys) -> None:
    code, out, _ = trtexec_of(capsys, str(compiled["trt11"]))
    assert code == 0 and "--stronglyTyped" in out and "--int8" not in out
    code, out, _ = trtexec_of(capsys, str(compiled["trt10"]))
    assert code == 0 and "--int8 --fp16" in out


def test_build_of_a_trt11_model_for_tensorrt_10_is_strongly_typed_and_says_why(compiled, capsys) -> None:
    code, out, err = trtexec_of(capsys, str(compiled["trt11"]), "--trt", "10")
    assert code == 0 and "--stronglyTyped" in out and "--int8" not in out and "--fp16" not in out
    assert "compiled for trt11" in err and "strongly typed" in err
    code, out, err = trtexec_of(capsys, str(compiled["trt11"]), "--trt", "10", "--weakly-typed")
    assert code != 0 and out == ""
    assert "compiled for trt11" in one_line_error(err) and "--weakly-typed" in err


def qdq_conv(path, shape) -> None:
    """x -> Q/DQ -> Conv(int8 weights) -> y with input shape `shape` (str entries are dynamic)."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(np.ones((8, 4, 3, 3), np.int8), "wq"),
        numpy_helper.from_array(np.full(8, 0.01, np.float32), "ws"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["xd", "w"], ["y"], name="conv", pads=[1] * 4),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize(
    "shape, spec, message",
    [
        ([1, 4, 16, 16], "images:1x4x16x16", "no input 'images' (inputs: x)"),
        ([1, 4, 16, 16], "x:1x4x16", "'x' has rank 4, --shapes gives 3 dimensions"),
        ([1, 4, 16, 16], "x:1x3x16x16", "dimension 1 of 'x' is fixed at 4 in the model"),
        ([1, 4, 16, 16], "x:1..8x4x16x16", "dimension 0 of 'x' is fixed at 1 in the model"),
        (["N", 4, 16, 16], None, "dynamic input(s) need --shapes: x"),
        (["N", 4, 16, 16], "x:1..8x5x16x16", "dimension 1 of 'x' is fixed at 4 in the model"),
    ],
)
def test_build_checks_shapes_against_the_model(tmp_path, capsys, shape, spec, message) -> None:
    path = tmp_path / "m.onnx"
    qdq_conv(path, shape)
    code, out, err = trtexec_of(capsys, str(path), *(["--shapes", spec] if spec else []))
    assert code != 0 and out == "" and message in one_line_error(err)


def test_build_accepts_shapes_that_fit_the_model(tmp_path, capsys) -> None:
    path = tmp_path / "m.onnx"
    qdq_conv(path, ["N", 4, 16, 16])
    code, out, _ = trtexec_of(capsys, str(path), "--shapes", "x:1..8x4x16x16")
    assert code == 0 and "--minShapes=x:1x4x16x16" in out and "--maxShapes=x:8x4x16x16" in out
    qdq_conv(path, [1, 4, 16, 16])
    code, out, _ = trtexec_of(capsys, str(path), "--shapes", "x:1x4x16x16")
    assert code == 0 and "--shapes=x:1x4x16x16" in out


def test_explain_of_a_dynamic_model_names_the_shapes_it_needs(tmp_path, capsys) -> None:
    path = tmp_path / "m.onnx"
    qdq_conv(path, ["N", 4, 16, 16])
    assert main(["explain", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["trtexec"] is None and "dynamic input(s) need --shapes: x" in data["trtexec_problem"]
    assert data["recipe"]["target"] is None and data["next_step"].startswith("qdqc report-engine ")

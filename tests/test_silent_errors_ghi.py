"""Issue 12, 2g-2i: degenerate inputs warn, malformed models fail in one line, multi-input calibration."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.calib.data import CalibrationDataError, open_calibration_data
from qdq_compiler.cli import main

OPSET = [helper.make_opsetid("", 17)]


def matmul_of_two_inputs() -> onnx.ModelProto:
    """Y = (A[32,64] x B[64,64]) x W: two graph inputs with different first dimensions and no batch axis."""
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [32, 64])
    b = helper.make_tensor_value_info("B", TensorProto.FLOAT, [64, 64])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [32, 16])
    weight = np.random.default_rng(3).standard_normal((64, 16)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["A", "B"], ["AB"], name="ab"),
        helper.make_node("MatMul", ["AB", "W"], ["Y"], name="abw"),
    ]
    graph = helper.make_graph(nodes, "ab", [a, b], [y], [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=OPSET)


def stacked_ab_samples(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "A": rng.standard_normal((count, 32, 64)).astype(np.float32),
        "B": rng.standard_normal((count, 64, 64)).astype(np.float32),
    }


# --------------------------------------------------------------------------- 2i: multi-input calibration
def test_stacked_samples_feed_each_input_whole() -> None:
    model = matmul_of_two_inputs()
    samples = stacked_ab_samples(3)
    data = open_calibration_data(samples, model)
    batches = list(data)
    assert data.num_samples == 3 and len(batches) == 3
    for index, batch in enumerate(batches):
        assert batch["A"].shape == (32, 64) and batch["B"].shape == (64, 64)
        np.testing.assert_array_equal(batch["A"], samples["A"][index])
        np.testing.assert_array_equal(batch["B"], samples["B"][index])


def test_stacked_samples_of_a_single_input_from_npy(tmp_path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 64])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]), opset_imports=OPSET
    )
    path = tmp_path / "x.npy"
    np.save(path, np.arange(5 * 32 * 64, dtype=np.float32).reshape(5, 32, 64))
    batches = list(open_calibration_data(path, model))
    assert [b["x"].shape for b in batches] == [(32, 64)] * 5
    assert batches[4]["x"][0, 0] == 4 * 32 * 64


def test_stacked_and_batch_layouts_mix_when_batch_is_one() -> None:
    """An image input in the batch layout ([N,3,8,8] for [?,3,8,8]) and a per-run vector stacked ([N,2])."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 8, 8])
    scale = helper.make_tensor_value_info("scale", TensorProto.FLOAT, [2])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["out"])], "g", [image, scale], [out])
    model = helper.make_model(graph, opset_imports=OPSET)
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.standard_normal((4, 3, 8, 8)).astype(np.float32),
        "scale": rng.standard_normal((4, 2)).astype(np.float32),
    }
    batches = list(open_calibration_data(arrays, model))
    assert [(b["image"].shape, b["scale"].shape) for b in batches] == [((1, 3, 8, 8), (2,))] * 4
    with pytest.raises(CalibrationDataError, match="one sample per run"):
        open_calibration_data(arrays, model, batch_size=2)


def test_compile_two_input_matmul_from_stacked_npz(tmp_path, capsys) -> None:
    model_path, data_path, out_path = tmp_path / "ab.onnx", tmp_path / "ab.npz", tmp_path / "ab.int8.onnx"
    onnx.save_model(matmul_of_two_inputs(), model_path)
    np.savez(data_path, **stacked_ab_samples(8))
    assert (
        main(["compile", str(model_path), "-o", str(out_path), "--calib", str(data_path), "--quantize-head"])
        == 0
    )
    compiled = onnx.load(out_path)
    assert sum(n.op_type == "QuantizeLinear" for n in compiled.graph.node) >= 1
    feeds = stacked_ab_samples(2, seed=7)
    batches = [{name: feeds[name][i] for name in feeds} for i in range(2)]
    reference = run_outputs(matmul_of_two_inputs(), batches)["Y"]
    quantized = run_outputs(compiled, batches)["Y"]
    assert sqnr_db(reference, quantized) > 30.0


def test_stacked_layout_is_part_of_the_cache_key(tmp_path) -> None:
    """The data hash covers the data actually fed: a different limit or content gives another key."""
    from qdq_compiler.calib import cache_key

    model = matmul_of_two_inputs()
    first = cache_key(model, open_calibration_data(stacked_ab_samples(4), model), 2048)
    again = cache_key(model, open_calibration_data(stacked_ab_samples(4), model), 2048)
    fewer = cache_key(model, open_calibration_data(stacked_ab_samples(4), model, limit=2), 2048)
    other = cache_key(model, open_calibration_data(stacked_ab_samples(4, seed=1), model), 2048)
    assert first == again and first != fewer and first != other
    assert first.batch_size == 1


# --------------------------------------------------------------------------- 2h: clear errors
def conv_relu_model(x_shape=(1, 8, 8, 8), w_shape=(8, 8, 3, 3)) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weight = numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], [weight]), opset_imports=OPSET)


def compile_error(
    tmp_path, capsys, model: onnx.ModelProto, data: np.ndarray | None = None, extra: tuple[str, ...] = ()
) -> str:
    """Compile ``model`` through the CLI, expect exit 2 and return the one stderr line."""
    model_path, data_path = tmp_path / "m.onnx", tmp_path / "calib.npy"
    onnx.save_model(model, model_path)
    np.save(
        data_path,
        np.random.default_rng(1).standard_normal((4, 8, 8, 8)).astype(np.float32) if data is None else data,
    )
    capsys.readouterr()
    status = main(
        [
            "compile",
            str(model_path),
            "-o",
            str(tmp_path / "out.onnx"),
            "--calib",
            str(data_path),
            "--quantize-head",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("qdqc: error: "), err
    assert not (tmp_path / "out.onnx").exists()
    return lines[0]


def test_initializer_declared_without_data_is_one_line_error(tmp_path, capsys) -> None:
    model = conv_relu_model()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")  # dims [8,8,3,3], no values: a model saved without its weights
    line = compile_error(tmp_path, capsys, model)
    assert "'w'" in line and "no data" in line


def test_initializer_with_too_few_values_is_one_line_error(tmp_path, capsys) -> None:
    model = conv_relu_model()
    weight = model.graph.initializer[0]
    weight.raw_data = weight.raw_data[:100]
    line = compile_error(tmp_path, capsys, model)
    assert "'w'" in line and "576" in line


def test_constant_node_without_data_is_one_line_error(tmp_path, capsys) -> None:
    model = conv_relu_model()
    empty = TensorProto(name="bias_value", data_type=TensorProto.FLOAT, dims=[8])  # dims, no values
    model.graph.node.insert(0, helper.make_node("Constant", [], ["b"], value=empty, name="bias"))
    model.graph.node[1].input.append("b")
    line = compile_error(tmp_path, capsys, model)
    assert "'b'" in line or "bias" in line
    assert "no data" in line


def test_input_without_shape_is_named(tmp_path, capsys) -> None:
    model = conv_relu_model()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    line = compile_error(tmp_path, capsys, model)
    assert "'x'" in line and "no shape" in line and "expects shape []" not in line


def test_rank2_conv_is_refused(tmp_path, capsys) -> None:
    model = conv_relu_model(x_shape=(8, 8), w_shape=(8, 8))
    line = compile_error(tmp_path, capsys, model, np.zeros((4, 8, 8), np.float32))
    assert "Conv" in line and "'conv'" in line and "rank" in line


def test_conv_on_a_reshaped_rank2_tensor_is_refused(tmp_path, capsys) -> None:
    """The rank is known only after shape inference: place-qdq refuses the Conv."""
    model = conv_relu_model(x_shape=(1, 8, 8, 8), w_shape=(8, 64, 1, 1))
    model.graph.initializer.append(numpy_helper.from_array(np.array([8, 64], np.int64), "shape"))
    model.graph.node.insert(0, helper.make_node("Reshape", ["x", "shape"], ["x2"], name="flatten"))
    model.graph.node[1].input[0] = "x2"
    line = compile_error(tmp_path, capsys, model)
    assert "Conv" in line and "'conv'" in line and "rank 2" in line


def test_gemm_on_rank3_input_is_refused(tmp_path, capsys) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weight = numpy_helper.from_array(np.ones((16, 8), np.float32), "w")
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")
    graph = helper.make_graph([gemm], "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=OPSET)
    line = compile_error(tmp_path, capsys, model, np.zeros((4, 8, 16), np.float32))
    assert "Gemm" in line and "'fc'" in line and "rank" in line


def test_valid_conv_model_still_compiles(tmp_path, capsys) -> None:
    model_path, data_path = tmp_path / "m.onnx", tmp_path / "calib.npy"
    onnx.save_model(conv_relu_model(), model_path)
    np.save(data_path, np.random.default_rng(1).standard_normal((4, 8, 8, 8)).astype(np.float32))
    assert (
        main(
            [
                "compile",
                str(model_path),
                "-o",
                str(tmp_path / "out.onnx"),
                "--calib",
                str(data_path),
                "--quantize-head",
            ]
        )
        == 0
    )
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"), full_check=True)


@pytest.mark.parametrize(
    ("weight_shape", "attrs", "bias", "expected"),
    [
        ((8, 4, 3, 3), {}, None, "8 channels"),
        ((9, 4, 3, 3), {"group": 3}, None, "8 channels"),
        ((8, 8, 3, 3), {}, 5, "bias has shape [5]"),
    ],
)
def test_conv_whose_weight_does_not_fit_its_input_is_refused(
    tmp_path, capsys, weight_shape, attrs, bias, expected
) -> None:
    """Shapes a Conv cannot run with (onnxruntime fails only at run time) are refused at load."""
    model = conv_relu_model(w_shape=weight_shape)
    conv = model.graph.node[0]
    conv.attribute.extend(helper.make_attribute(key, value) for key, value in attrs.items())
    if bias is not None:
        model.graph.initializer.append(numpy_helper.from_array(np.ones(bias, np.float32), "b"))
        conv.input.append("b")
    line = compile_error(tmp_path, capsys, model)
    assert "'conv'" in line and expected in line


def test_gemm_inner_dimension_mismatch_is_refused(tmp_path, capsys) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weight = numpy_helper.from_array(np.ones((32, 16), np.float32), "w")
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")
    model = helper.make_model(helper.make_graph([gemm], "g", [x], [y], [weight]), opset_imports=OPSET)
    line = compile_error(tmp_path, capsys, model, np.zeros((4, 64), np.float32))
    assert "'fc'" in line and "64 vs 32" in line


# --------------------------------------------------------------------------- 2g: degenerate cases warn
def compile_ok(
    tmp_path, capsys, model: onnx.ModelProto, data: np.ndarray, *extra: str
) -> tuple[onnx.ModelProto, str]:
    """Compile through the CLI, expect success; return the output model and stderr."""
    model_path, data_path, out_path = tmp_path / "m.onnx", tmp_path / "calib.npy", tmp_path / "out.onnx"
    onnx.save_model(model, model_path)
    np.save(data_path, data)
    capsys.readouterr()
    status = main(["compile", str(model_path), "-o", str(out_path), "--calib", str(data_path), *extra])
    err = capsys.readouterr().err
    assert status == 0, err
    return onnx.load(out_path), err


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("qdqc: WARNING: ")]


def activation_scales(model: onnx.ModelProto) -> dict[str, float]:
    """Scale of every QuantizeLinear, by the tensor it quantizes."""
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        node.input[0]: float(constants[node.input[1]])
        for node in model.graph.node
        if node.op_type == "QuantizeLinear"
    }


def conv_bias_model() -> onnx.ModelProto:
    model = conv_relu_model()
    model.graph.initializer.append(numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32), "b"))
    model.graph.node[0].input.append("b")
    return model


def test_all_zero_calibration_data_warns_and_gets_a_safe_scale(tmp_path, capsys) -> None:
    zeros = np.zeros((4, 8, 8, 8), np.float32)
    compiled, err = compile_ok(tmp_path, capsys, conv_bias_model(), zeros, "--quantize-head")
    [warning] = [w for w in warnings_of(err) if "all zero" in w]
    assert "1 activation tensor" in warning and "'x'" in warning
    assert activation_scales(compiled) == {"x": pytest.approx(np.float32(1.0 / 127.0), rel=1e-7)}
    feeds = [{"x": zeros[:1]}, {"x": np.full((1, 8, 8, 8), 0.5, np.float32)}]
    reference = run_outputs(conv_bias_model(), feeds)["y"]
    quantized = run_outputs(compiled, feeds)["y"]
    np.testing.assert_allclose(quantized[0], reference[0], atol=1e-6)  # zeros quantize exactly
    assert sqnr_db(reference, quantized) > 25.0  # and later non-zero data is not crushed to zero


def test_model_without_weighted_layers_warns_nothing_quantized(tmp_path, capsys) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=OPSET)
    _, err = compile_ok(tmp_path, capsys, model, np.ones((2, 8, 8, 8), np.float32))
    [warning] = [w for w in warnings_of(err) if "no layer was quantized" in w]
    assert "no weighted layer" in warning and "Conv" in warning


def test_all_layers_excluded_warns_nothing_quantized_with_the_reason(tmp_path, capsys) -> None:
    data = np.random.default_rng(1).standard_normal((2, 8, 8, 8)).astype(np.float32)
    _, err = compile_ok(tmp_path, capsys, conv_relu_model(), data, "--quantize-head", "--exclude", "co*")
    [warning] = [w for w in warnings_of(err) if "no layer was quantized" in w]
    assert "'conv'" in warning and "excluded by name pattern" in warning
    _, err = compile_ok(tmp_path, capsys, conv_relu_model(), data)
    [warning] = [w for w in warnings_of(err) if "no layer was quantized" in w]
    assert "detection-head" in warning


def test_patterns_that_match_nothing_are_named(tmp_path, capsys) -> None:
    data = np.random.default_rng(1).standard_normal((2, 8, 8, 8)).astype(np.float32)
    _, err = compile_ok(
        tmp_path,
        capsys,
        conv_relu_model(),
        data,
        "--quantize-head",
        "--exclude",
        "nope*",
        "--exclude-op",
        "Gemm",
        "--exclude-op",
        "conv",
        "--exclude-op",
        "Relu",
        "--calib-override",
        "zzz=max",
        "--calib-override",
        "op:Sigmoid=max",
        "--calib-override",
        "x=max",
    )
    warnings = warnings_of(err)
    text = "\n".join(warnings)
    assert any("'nope*'" in w and "matches no" in w for w in warnings), text
    assert any("'Gemm'" in w and "no Gemm" in w for w in warnings), text
    assert any("'conv'" in w and "'Conv'" in w for w in warnings), text  # did you mean
    assert any("'Relu'" in w and "not a weighted op" in w for w in warnings), text
    assert any("'zzz'" in w and "matches no" in w for w in warnings), text
    assert any("'op:Sigmoid'" in w and "matches no" in w for w in warnings), text
    assert not any("--calib-override 'x'" in w for w in warnings), text  # x=max matched the input


def test_patterns_that_match_say_nothing(tmp_path, capsys) -> None:
    data = np.random.default_rng(1).standard_normal((2, 8, 8, 8)).astype(np.float32)
    _, err = compile_ok(
        tmp_path,
        capsys,
        conv_relu_model(),
        data,
        "--quantize-head",
        "--calib-override",
        "op:Conv=max",
        "--exclude-op",
        "MatMul",
    )
    assert [w for w in warnings_of(err) if "Conv" in w] == []


def test_lint_on_a_float_model_says_there_is_nothing_to_lint(tmp_path, capsys) -> None:
    path = tmp_path / "float.onnx"
    onnx.save_model(conv_relu_model(), path)
    capsys.readouterr()
    assert main(["lint", str(path)]) == 0
    err = capsys.readouterr().err
    assert any("holds no Q/DQ" in w and "nothing to lint" in w for w in warnings_of(err)), err
    assert main(["lint", "--strict", str(path)]) == 1


def test_constant_calibration_input_is_warned(tmp_path, capsys) -> None:
    constant = np.full((4, 8, 8, 8), 0.5, np.float32)
    _, err = compile_ok(tmp_path, capsys, conv_bias_model(), constant, "--quantize-head")
    assert any("input 'x' is constant" in w and "0.5" in w for w in warnings_of(err)), err


def test_an_array_fitting_neither_layout_names_both() -> None:
    expected = (
        r"expects shape \[1,8,8,8\]: give its samples on the batch axis \[N,8,8,8\] "
        r"or stacked \[N,1,8,8,8\]"
    )
    with pytest.raises(CalibrationDataError, match=expected):
        open_calibration_data(np.zeros((2, 2, 1, 8, 8, 8), np.float32), conv_relu_model())


def test_a_warning_is_given_once_per_context(caplog) -> None:
    """sensitivity runs place-qdq per variant over one context: the user's typo is named once."""
    from qdq_compiler.ir import load_model
    from qdq_compiler.pm import PassContext, PassManager

    ctx, pipeline = PassContext(), "infer-shapes,place-qdq{exclude=[nope]}"
    with caplog.at_level("WARNING", logger="qdqc"):
        for _ in range(3):
            PassManager(pipeline).run(load_model(conv_relu_model()), ctx)
        assert sum("'nope'" in r.getMessage() for r in caplog.records) == 1
        PassManager(pipeline).run(load_model(conv_relu_model()), PassContext())
        assert sum("'nope'" in r.getMessage() for r in caplog.records) == 2


def test_model_without_its_external_data_file_is_one_line_error(tmp_path, capsys) -> None:
    """Guard (one line already before issue 12): the external data file was not copied with the model."""
    model_path = tmp_path / "m.onnx"
    onnx.save_model(
        conv_relu_model(), model_path, save_as_external_data=True, location="m.onnx.data", size_threshold=0
    )
    (tmp_path / "m.onnx.data").unlink()
    capsys.readouterr()
    assert main(["inspect", str(model_path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("qdqc: error: ") and "m.onnx.data" in lines[0], lines


def _undefined_input(model: onnx.ModelProto) -> None:
    model.graph.node[1].input[0] = "undefined"


def _produced_twice(model: onnx.ModelProto) -> None:
    model.graph.node[1].output[0] = "c"
    model.graph.output[0].name = "c"


def _negative_dim(model: onnx.ModelProto) -> None:
    model.graph.initializer[0].dims[0] = -8


def _conv_attribute(name: str, value: list[int]):
    def edit(model: onnx.ModelProto) -> None:
        model.graph.node[0].attribute.append(helper.make_attribute(name, value))

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_undefined_input, "'undefined'"),
        (_produced_twice, "'c'"),
        (_negative_dim, "negative"),
        (_conv_attribute("pads", [1, 1]), "pads"),
        (_conv_attribute("strides", [0, 0]), "strides"),
        (_conv_attribute("dilations", [1, 1, 1]), "dilations"),
        (_conv_attribute("kernel_shape", [5, 5]), "kernel_shape"),
    ],
    ids=["undefined-input", "produced-twice", "negative-dim", "pads", "strides", "dilations", "kernel-shape"],
)
def test_malformed_graph_is_named_in_one_line(tmp_path, capsys, edit, expected) -> None:
    """Malformed models that were compiled into invalid output (or failed with an onnx_ir message)."""
    model = conv_relu_model()
    edit(model)
    line = compile_error(tmp_path, capsys, model)
    assert expected in line and "_deserialize" not in line, line

"""strip-qdq, import-scales, trt-int8-from-qdq: an already-quantized model re-placed with its own scales."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy import run_outputs
from qdq_compiler.cli import main
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import count_qdq, load_model, to_proto
from qdq_compiler.ir.qdq import scale_of
from qdq_compiler.models.yolov7_tiny import build_yolov7_tiny
from qdq_compiler.pipelines import TRT_INT8_FROM_QDQ
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.quant.activation_scales import activation_quantizers
from qdq_compiler.quant.imported import covering_amax, imported_amax
from qdq_compiler.targets import lint_model, predict_fusions


def test_covering_amax_by_hand():
    assert covering_amax(np.float32(0.1), np.int8(0), np.dtype(np.int8)) == pytest.approx(12.7)
    assert covering_amax(np.float32(0.1), None, np.dtype(np.int8)) == pytest.approx(12.7)
    assert covering_amax(np.float32(0.1), np.uint8(0), np.dtype(np.uint8)) == pytest.approx(25.5)
    assert covering_amax(np.float32(0.1), np.uint8(128), np.dtype(np.uint8)) == pytest.approx(12.8)
    assert covering_amax(np.array([0.1, 0.3]), np.zeros(2, np.int8), np.dtype(np.int8)) == pytest.approx(38.1)
    with pytest.raises(ValueError, match="int32"):
        covering_amax(np.float32(0.1), np.int32(0), np.dtype(np.int32))


def _hand_quantized() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """x -> Q/DQ (int8, 0.05) -> Conv(W = DQ(int8, per channel), B = DQ(int32)) -> Q/DQ (uint8, zp 10).

    Returns the model, and the float weight and bias its DQs compute.
    """
    rng = np.random.default_rng(0)
    w_q = rng.integers(-127, 128, (4, 4, 3, 3)).astype(np.int8)
    w_scale = np.array([0.01, 0.02, 0.03, 0.04], np.float32)
    b_q = np.array([100, -50, 7, 0], np.int32)
    b_scale = np.float32(0.0005)
    inits = [
        numpy_helper.from_array(np.float32(0.05), "x_scale"),
        numpy_helper.from_array(np.int8(0), "x_zp"),
        numpy_helper.from_array(w_q, "w_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(b_q, "b_q"),
        numpy_helper.from_array(b_scale, "b_scale"),
        numpy_helper.from_array(np.float32(0.02), "y_scale"),
        numpy_helper.from_array(np.uint8(10), "y_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_DQ", axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale"], ["b"], name="b_DQ"),
        helper.make_node("Conv", ["x_dq", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["conv", "y_scale", "y_zp"], ["y_q"], name="y_Q"),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["y"], name="y_DQ"),
    ]
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    weight = w_q.astype(np.float32) * w_scale[:, None, None, None]
    bias = (b_q.astype(np.float64) * b_scale).astype(np.float32)
    return model, weight, bias


def test_strip_qdq_restores_float_constants_and_keeps_activation_ranges():
    source, weight, bias = _hand_quantized()
    model = load_model(source)
    PassManager("strip-qdq").run(model, PassContext(), stamp=False)
    assert count_qdq(model.graph) == (0, 0)
    conv = next(node for node in model.graph if node.op_type == "Conv")
    np.testing.assert_array_equal(conv.inputs[1].const_value.numpy(), weight)
    np.testing.assert_array_equal(conv.inputs[2].const_value.numpy(), bias)
    assert conv.inputs[0].name == "x" and [v.name for v in model.graph.outputs] == ["y"]
    # the output pair's tensor took over the graph output's name
    assert imported_amax(model) == pytest.approx({"x": 0.05 * 127, "y": 0.02 * 245})
    # the stripped model computes the float conv
    x = np.random.default_rng(1).standard_normal((1, 4, 5, 5)).astype(np.float32)
    expected = helper.make_model(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
            "float",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
            [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    got = run_outputs(to_proto(model), [{"x": x}])["y"]
    np.testing.assert_allclose(got, run_outputs(expected, [{"x": x}])["y"], rtol=1e-6, atol=1e-6)


def test_strip_qdq_refuses_integer_data_at_the_boundary():
    source, _, _ = _hand_quantized()
    source.graph.output[0].name = "y_q"  # the graph now returns INT8 data
    source.graph.output[0].type.tensor_type.elem_type = TensorProto.UINT8
    with pytest.raises(QdqcError, match="feeds integer data"):
        PassManager("strip-qdq").run(load_model(source), PassContext(), stamp=False)


def _ort_quantized(tmp_path, op_types=None) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A small YOLOv7-tiny quantized by onnxruntime's quantize_static (QDQ, symmetric, per channel)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    float_model = build_yolov7_tiny(width=0.125, resolution=96, num_classes=5, seed=3)
    float_path, qdq_path = tmp_path / "float.onnx", tmp_path / "ort_qdq.onnx"
    onnx.save(float_model, float_path)
    name = float_model.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.random.default_rng(2).random((4, 1, 3, 96, 96), dtype=np.float32))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {name: batch}

    quantize_static(
        str(float_path),
        str(qdq_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=op_types,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return float_model, onnx.load(qdq_path)


def test_an_onnxruntime_model_gets_tensorrt_placement_with_its_own_scales(tmp_path):
    float_model, ort_model = _ort_quantized(tmp_path)
    before = load_model(ort_model)
    assert any(v.severity == "error" for v in lint_model(before))  # INT32 biases, at least
    assert predict_fusions(before).requantizations  # Concat inputs with different scales
    ort_scales = {float(scale_of(q)) for q in activation_quantizers(before.graph)}

    model = load_model(ort_model)
    PassManager("trt-int8-from-qdq").run(model, PassContext())
    assert not [v for v in lint_model(model) if v.severity == "error"]
    report = predict_fusions(model)
    assert not report.requantizations and report.int8_mac_share > 0.9
    ours = activation_quantizers(model.graph)
    assert ours and all(float(scale_of(q)) in ort_scales for q in ours)  # unify-scales picks a member's
    float_graph = load_model(float_model).graph
    names = {v.name for node in float_graph for v in node.outputs} | {v.name for v in float_graph.inputs}
    assert all(q.inputs[0].name in names for q in ours)  # tensors keep the float model's names
    feed = [{float_model.graph.input[0].name: np.random.default_rng(9).random((1, 3, 96, 96), np.float32)}]
    assert set(run_outputs(to_proto(model), feed)) == set(run_outputs(float_model, feed))


def test_missing_imported_scales_are_an_error_unless_left_float(tmp_path):
    _, ort_model = _ort_quantized(tmp_path, op_types=["Conv"])  # onnxruntime leaves MaxPool/Concat float
    with pytest.raises(QdqcError, match="no scale for"):
        PassManager("trt-int8-from-qdq").run(load_model(ort_model), PassContext())
    manager = PassManager(TRT_INT8_FROM_QDQ.replace("import-scales", "import-scales{missing=float}"))
    model = load_model(ort_model)
    results = manager.run(model, PassContext())
    left = sum(r.statistics.get("num-left-float", 0) for r in results)
    assert left > 0
    assert not [v for v in lint_model(model) if v.severity == "error"]


def test_cli_missing_scales_flag_keeps_the_layer_float_and_says_why(tmp_path, capsys):
    source, _, _ = _hand_quantized()
    del source.graph.node[:2]  # the input pair goes: the Conv reads x in float, as the source left it
    next(node for node in source.graph.node if node.op_type == "Conv").input[0] = "x"
    path, out = tmp_path / "no_input_pair.onnx", tmp_path / "out.onnx"
    onnx.save(source, path)
    args = ["compile", str(path), "--pipeline", "trt-int8-from-qdq", "--quantize-head", "-o", str(out)]
    assert main(args) == 2
    assert "--missing-scales float" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--missing-scales", "float"]) == 0
    assert "conv: no imported scale for its input" in capsys.readouterr().out
    compiled = load_model(out)
    assert count_qdq(compiled.graph) == (0, 0)  # a float layer keeps float weights too
    conv = next(node for node in compiled.graph if node.op_type == "Conv")
    np.testing.assert_array_equal(conv.inputs[1].const_value.numpy(), _hand_quantized()[1])


def test_a_model_without_activation_scales_is_refused_whatever_missing_says(tmp_path, capsys):
    float_model = build_yolov7_tiny(width=0.125, resolution=96, num_classes=5, seed=3)
    path = tmp_path / "float.onnx"
    onnx.save(float_model, path)
    for extra in ([], ["--missing-scales", "float"]):
        out = str(tmp_path / "o.onnx")
        args = ["compile", str(path), "--pipeline", "trt-int8-from-qdq", "-o", out, *extra]
        assert main(args) == 2
        assert "carries no activation scales" in capsys.readouterr().err


def test_cli_refuses_a_quantized_model_in_the_float_pipeline_with_a_hint(tmp_path, capsys):
    source, _, _ = _hand_quantized()
    path = tmp_path / "q.onnx"
    onnx.save(source, path)
    refused = ["compile", str(path), "--calib-cache", str(tmp_path / "x"), "-o", str(tmp_path / "o.onnx")]
    assert main(refused) == 2
    err = capsys.readouterr().err
    assert "already quantized" in err and "trt-int8-from-qdq" in err and err.count("\n") == 1
    data = str(tmp_path / "x.npy")
    for args in (
        ["calibrate", str(path), "--calib", data, "-o", str(tmp_path / "s")],
        ["sensitivity", str(path), "--calib", data],
    ):
        assert main(args) == 2
        assert "already quantized" in capsys.readouterr().err
    out = tmp_path / "re.onnx"
    args = ["-q", "compile", str(path), "--pipeline", "trt-int8-from-qdq", "--quantize-head", "-o", str(out)]
    assert main(args) == 0
    quantizers = activation_quantizers(load_model(out).graph)
    assert [q.inputs[0].name for q in quantizers] == ["x"]
    assert scale_of(quantizers[0]) == np.float32(0.05)  # the imported model's scale, unchanged


def _strip(text: str):
    model = load_model(onnx.parser.parse_model(text))
    PassManager("strip-qdq").run(model, PassContext(), stamp=False)
    return model


def test_strip_folds_asymmetric_uint8_weights_and_keeps_float16_scales():
    text = """
        <ir_version: 9, opset_import: ["" : 19]>
        g (float16[1, 2, 1, 1] x) => (float16[1, 2, 1, 1] y)
          <uint8[2, 2, 1, 1] wq = {128, 130, 0, 255}, uint8[2] wz = {128, 100}> {
           w = DequantizeLinear <axis = 0> (wq, ws, wz)
           y = Conv(x, w)
        }"""
    proto = onnx.parser.parse_model(text)
    proto.graph.initializer.append(numpy_helper.from_array(np.array([0.5, 0.25], np.float16), "ws"))
    model = load_model(proto)
    PassManager("strip-qdq").run(model, PassContext(), stamp=False)
    weight = next(node for node in model.graph if node.op_type == "Conv").inputs[1].const_value.numpy()
    assert weight.dtype == np.float16
    np.testing.assert_array_equal(weight.reshape(-1), np.array([0.0, 1.0, -25.0, 38.75], np.float16))


def test_strip_records_the_default_uint8_range_and_the_larger_of_two_pairs():
    model = _strip("""
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[1, 4, 1, 1] x) => (float[1, 4, 1, 1] y, float[1, 4, 1, 1] z)
          <float s1 = {0.1}, float s2 = {0.3}, int8 zp = {0},
           float[4, 4, 1, 1] w = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}> {
           a = Relu(x)
           aq = QuantizeLinear(a, s1)
           ad = DequantizeLinear(aq, s1)
           y = Conv(ad, w)
           bq = QuantizeLinear(a, s2, zp)
           z = DequantizeLinear(bq, s2, zp)
        }""")
    # no zero-point: UINT8 (0.1 * 255); the INT8 pair: 0.3 * 127; the tensor took the graph output's name
    assert imported_amax(model) == pytest.approx({"z": max(0.1 * 255, 0.3 * 127)})
    assert [v.name for v in model.graph.outputs] == ["y", "z"]


def test_strip_folds_a_dequantized_constant_graph_output():
    model = _strip("""
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x) => (float[2] y, float[2] c) <int8[2] q = {2, -4}, float s = {0.5}> {
           c = DequantizeLinear(q, s)
           y = Add(x, c)
        }""")
    assert count_qdq(model.graph) == (0, 0)
    constant = next(v for v in model.graph.outputs if v.name == "c")
    np.testing.assert_array_equal(constant.const_value.numpy(), np.array([1.0, -2.0], np.float32))


def test_imported_scales_survive_an_identity_before_the_pair():
    text = """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[1, 4, 3, 3] x) => (float[1, 4, 3, 3] y) <float s = {0.02}, int8 zp = {0},
          float[4, 4, 1, 1] w = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}> {
           a = Relu(x)
           b = Identity(a)
           bq = QuantizeLinear(b, s, zp)
           bd = DequantizeLinear(bq, s, zp)
           y = Conv(bd, w)
        }"""
    model = load_model(onnx.parser.parse_model(text))
    pipeline = TRT_INT8_FROM_QDQ.replace("place-qdq", "place-qdq{quantize-head=true}")
    PassManager(pipeline).run(model, PassContext())
    quantizers = activation_quantizers(model.graph)
    assert [q.inputs[0].name for q in quantizers] == ["a"] and scale_of(quantizers[0]) == np.float32(0.02)


@pytest.mark.parametrize(
    "body, message",
    [
        ("xq = QuantizeLinear(x, t)\n y = DequantizeLinear(xq, t)", "not a constant"),
        ("xq = QuantizeLinear(x, s)\n y = DequantizeLinear(xq, s2)", "different scales"),
        ("xq = QuantizeLinear(x, zero)\n y = DequantizeLinear(xq, zero)", "not positive"),
        ("xq = QuantizeLinear <block_size = 2> (x, s)\n y = DequantizeLinear(xq, s)", "blocked"),
        ("xq = com.microsoft.QuantizeLinear(x, s)\n y = com.microsoft.DequantizeLinear(xq, s)", "contrib"),
    ],
)
def test_strip_refuses_what_it_cannot_take_over(body, message):
    text = f"""
        <ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
        g (float[2] x, float t) => (float[2] y)
          <float s = {{0.1}}, float s2 = {{0.2}}, float zero = {{0.0}}> {{
           {body}
        }}"""
    with pytest.raises(QdqcError, match=message):
        _strip(text)


def test_covering_amax_of_signed_types_with_a_zero_point():
    assert covering_amax(np.float32(0.1), np.int8(20), np.dtype(np.int8)) == pytest.approx(0.1 * 148)
    assert covering_amax(np.float32(0.1), np.int8(-127), np.dtype(np.int8)) == pytest.approx(0.1 * 254)

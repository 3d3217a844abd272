"""Fusion prediction on tiny Q/DQ models: INT8 layers, requantizations, reformats, MAC share."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.ir import load_model
from qdq_compiler.targets.fusion import format_report, predict_fusions, report_to_json


class Net:
    """A few helpers over onnx.helper to write small Q/DQ graphs (NCHW, int8, zero-point 0)."""

    def __init__(self, opset: int = 17):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.opset = opset
        self.rng = np.random.default_rng(0)

    def input(self, name: str, shape: list[int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        return name

    def output(self, name: str) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def qdq(self, x: str, scale: float, name: str) -> str:
        s = self.const(f"{name}_s", np.array(scale, np.float32))
        z = self.const(f"{name}_z", np.array(0, np.int8))
        q = self.op("QuantizeLinear", [x, s, z], f"{name}_Q")
        return self.op("DequantizeLinear", [q, s, z], f"{name}_DQ")

    def conv(self, x: str, cin: int, cout: int, name: str, quant_weight: bool = True, k: int = 3) -> str:
        w = self.rng.normal(size=(cout, cin, k, k)).astype(np.float32)
        b = self.const(f"{name}_b", np.zeros(cout, np.float32))
        if quant_weight:
            scale = np.abs(w).reshape(cout, -1).max(axis=1) / 127
            q = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
            wq = self.const(f"{name}_wq", q)
            ws = self.const(f"{name}_ws", scale.astype(np.float32))
            wz = self.const(f"{name}_wz", np.zeros(cout, np.int8))
            wname = self.op("DequantizeLinear", [wq, ws, wz], f"{name}_wDQ", axis=0)
        else:
            wname = self.const(f"{name}_w", w)
        return self.op("Conv", [x, wname, b], name, pads=[k // 2] * 4)

    def model(self):
        graph = helper.make_graph(self.nodes, "net", self.inputs, self.outputs, self.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        return load_model(proto)


def _layer(report, name):
    return next(layer for layer in report.layers if layer.name == name)


def test_conv_with_qdq_in_and_out_runs_int8():
    net = Net()
    x = net.qdq(net.input("x", [1, 4, 8, 8]), 0.05, "x")
    y = net.op("Relu", [net.conv(x, 4, 8, "conv")], "relu")
    net.op("Identity", [net.qdq(y, 0.1, "y")], "out")
    net.output("out")
    report = predict_fusions(net.model())
    conv = _layer(report, "conv")
    assert (conv.precision, conv.output, conv.fused) == ("int8", "int8", ["relu"])
    assert conv.macs == 1 * 8 * 8 * 8 * 4 * 3 * 3
    assert report.requantizations == []
    assert report.int8_mac_share == 1.0
    assert "prediction" in format_report(report).lower()
    kinds = {(r.kind, r.node) for r in report.reformats}
    assert ("Q", "x_Q") in kinds  # quantizing the graph input is its own layer
    assert ("DQ", "y_DQ") in kinds  # so is the final dequantize


def _two_branch_concat(scale_a: float, scale_b: float, scale_out: float) -> Net:
    net = Net()
    x = net.qdq(net.input("x", [1, 4, 8, 8]), 0.05, "x")
    a = net.qdq(net.conv(x, 4, 8, "conv_a"), scale_a, "a")
    b = net.qdq(net.conv(x, 4, 8, "conv_b"), scale_b, "b")
    cat = net.qdq(net.op("Concat", [a, b], "cat", axis=1), scale_out, "cat")
    net.conv(cat, 16, 8, "conv_c")
    net.output("conv_c")
    return net


def test_concat_with_equal_scales_has_no_requantization():
    report = predict_fusions(_two_branch_concat(0.1, 0.1, 0.1).model())
    assert report.requantizations == []
    assert {_layer(report, n).output for n in ("conv_a", "conv_b")} == {"int8"}
    assert "Concat 'cat'" in report.int8_ops
    assert report.cancelled_pairs >= 1


def test_concat_with_different_scales_lists_requantizations():
    report = predict_fusions(_two_branch_concat(0.1, 0.4, 0.4).model())
    assert [(r.dq, r.q) for r in report.requantizations] == [("a_DQ", "cat_Q")]
    rq = report.requantizations[0]
    assert rq.dq_scale == pytest.approx(0.1) and rq.q_scale == pytest.approx(0.4)
    assert "Concat 'cat'" in rq.at
    assert "a_DQ -> cat_Q" in format_report(report)


def test_maxpool_scale_mismatch_is_a_requantization():
    net = Net()
    x = net.qdq(net.input("x", [1, 4, 8, 8]), 0.05, "x")
    y = net.qdq(net.conv(x, 4, 8, "conv1"), 0.2, "y")
    p = net.qdq(net.op("MaxPool", [y], "pool", kernel_shape=[2, 2], strides=[2, 2]), 0.3, "p")
    net.conv(p, 8, 8, "conv2")
    net.output("conv2")
    report = predict_fusions(net.model())
    assert [(r.dq, r.q, r.dq_scale, r.q_scale) for r in report.requantizations] == [
        ("y_DQ", "p_Q", pytest.approx(0.2), pytest.approx(0.3))
    ]
    assert "MaxPool 'pool'" in report.requantizations[0].at
    assert _layer(report, "conv1").output == "int8"  # y_Q fuses into conv1's output
    assert report.moves  # the DQ moved across the MaxPool


def test_maxpool_with_equal_scales_cancels():
    net = Net()
    x = net.qdq(net.input("x", [1, 4, 8, 8]), 0.05, "x")
    y = net.qdq(net.conv(x, 4, 8, "conv1"), 0.2, "y")
    p = net.qdq(net.op("MaxPool", [y], "pool", kernel_shape=[2, 2], strides=[2, 2]), 0.2, "p")
    net.conv(p, 8, 8, "conv2")
    net.output("conv2")
    report = predict_fusions(net.model())
    assert report.requantizations == []
    assert "MaxPool 'pool'" in report.int8_ops


def test_dq_feeding_a_lone_sigmoid_is_a_reformat():
    net = Net()
    x = net.qdq(net.input("x", [1, 4, 8, 8]), 0.05, "x")
    net.op("Sigmoid", [x], "sig")
    net.output("sig")
    report = predict_fusions(net.model())
    dq = [r for r in report.reformats if r.kind == "DQ"]
    assert [r.node for r in dq] == ["x_DQ"]
    assert "Sigmoid 'sig'" in dq[0].reason


def test_mac_share_with_one_unquantized_conv():
    net = Net()
    x = net.qdq(net.input("x", [1, 3, 16, 16]), 0.05, "x")
    y = net.conv(x, 3, 8, "conv1")  # int8 in, float out
    net.conv(y, 8, 16, "conv2")  # activation not quantized
    net.output("conv2")
    report = predict_fusions(net.model())
    conv1, conv2 = _layer(report, "conv1"), _layer(report, "conv2")
    assert conv1.macs == 16 * 16 * 8 * 3 * 9 and conv2.macs == 16 * 16 * 16 * 8 * 9
    assert (conv1.precision, conv1.output) == ("int8", "float")
    assert (conv2.precision, conv2.reason) == ("float", "activation input not quantized")
    assert report.int8_mac_share == pytest.approx(conv1.macs / (conv1.macs + conv2.macs))
    data = report_to_json(report)
    assert data["int8_mac_share"] == pytest.approx(report.int8_mac_share)
    assert data["layers"][1]["reason"] == "activation input not quantized"


def test_weight_not_quantized_and_excluded_reasons():
    net = Net()
    x = net.qdq(net.input("x", [1, 3, 8, 8]), 0.05, "x")
    a = net.conv(x, 3, 4, "conv_a", quant_weight=False)
    net.conv(x, 3, 4, "conv_b", quant_weight=False)
    net.output(a)
    net.output("conv_b")
    report = predict_fusions(net.model(), excluded=["conv_b"])
    assert _layer(report, "conv_a").reason == "weight not quantized"
    assert _layer(report, "conv_b").reason == "excluded"
    assert [r.node for r in report.reformats if r.kind == "DQ"] == ["x_DQ"]  # nothing absorbs it


def test_residual_add_and_silu_fuse_into_the_conv_epilogue():
    net = Net()
    x = net.qdq(net.input("x", [1, 8, 8, 8]), 0.05, "x")
    c = net.conv(x, 8, 8, "conv")
    s = net.op("Sigmoid", [c], "sig")
    m = net.op("Mul", [c, s], "mul")
    r = net.op("Add", [m, x], "add")
    net.op("Identity", [net.qdq(r, 0.1, "r")], "out")
    net.output("out")
    conv = _layer(predict_fusions(net.model()), "conv")
    assert (conv.output, conv.fused) == ("int8", ["sig", "mul", "add"])


def test_quantized_residual_input_is_not_a_split_fusion():
    net = Net()
    x = net.qdq(net.input("x", [1, 8, 8, 8]), 0.05, "x")
    skip = net.qdq(net.conv(x, 8, 8, "conv_skip", k=1), 0.1, "skip")  # placement recommendation 4
    r = net.op("Add", [net.conv(x, 8, 8, "conv_main"), skip], "add")
    net.op("Identity", [net.qdq(r, 0.1, "r")], "out")
    net.output("out")
    report = predict_fusions(net.model())
    assert (_layer(report, "conv_main").output, _layer(report, "conv_main").fused) == ("int8", ["add"])
    assert _layer(report, "conv_skip").output == "int8"
    assert report.split_fusions == []


def test_qdq_between_conv_and_bn_is_a_split_fusion():
    net = Net()
    x = net.qdq(net.input("x", [1, 4, 8, 8]), 0.05, "x")
    c = net.qdq(net.conv(x, 4, 4, "conv"), 0.1, "c")
    params = [
        net.const(f"bn_{p}", np.full(4, v, np.float32)) for p, v in (("g", 1), ("b", 0), ("m", 0), ("v", 1))
    ]
    bn = net.qdq(net.op("BatchNormalization", [c, *params], "bn"), 0.1, "bn")
    net.conv(bn, 4, 4, "conv2")
    net.output("conv2")
    report = predict_fusions(net.model())
    assert len(report.split_fusions) == 1 and "fold BN" in report.split_fusions[0]
    assert "BatchNormalization 'bn'" in report.int8_ops  # DQ + BN + Q: its own INT8 pointwise layer
    assert report.requantizations == [] and report.reformats[0].node == "x_Q" and len(report.reformats) == 1


def test_residual_add_with_float_input_keeps_float_output():
    net = Net()
    x = net.qdq(net.input("x", [1, 8, 8, 8]), 0.05, "x")
    r = net.op("Add", [net.conv(x, 8, 8, "conv"), "x"], "add")
    net.op("Identity", [net.qdq(r, 0.1, "r")], "out")
    net.output("out")
    report = predict_fusions(net.model())
    conv = _layer(report, "conv")
    assert conv.output == "float" and "residual" in conv.reason
    assert any(r.kind == "Q" and r.node == "r_Q" for r in report.reformats)


def test_linear_resize_blocks_propagation_but_nearest_does_not():
    for mode, expect_requant in (("nearest", True), ("linear", False)):
        net = Net(opset=17)
        x = net.qdq(net.input("x", [1, 4, 8, 8]), 0.05, "x")
        y = net.qdq(net.conv(x, 4, 4, "conv1"), 0.2, "y")
        scales = net.const("rs", np.array([1, 1, 2, 2], np.float32))
        up = net.op("Resize", [y, "", scales], "up", mode=mode)
        net.conv(net.qdq(up, 0.3, "u"), 4, 4, "conv2")
        net.output("conv2")
        report = predict_fusions(net.model())
        assert bool(report.requantizations) is expect_requant, mode


# ------------------------------------------------------------------------------------------------------------
# A model quantized by onnxruntime.quantization (QDQ format), checked end to end
# ------------------------------------------------------------------------------------------------------------


def _float_model(path) -> None:
    """x -> conv_a (small range) and conv_b (20x range) -> Concat -> MaxPool -> conv_c."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 3, 3)).astype(np.float32), "wa"),
        numpy_helper.from_array(np.zeros(8, np.float32), "ba"),
        numpy_helper.from_array(rng.normal(0, 2.0, (8, 3, 3, 3)).astype(np.float32), "wb"),
        numpy_helper.from_array(np.zeros(8, np.float32), "bb"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8, 16, 3, 3)).astype(np.float32), "wc"),
        numpy_helper.from_array(np.zeros(8, np.float32), "bc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
        helper.make_node("Conv", ["x", "wb", "bb"], ["b"], name="conv_b", pads=[1] * 4),
        helper.make_node("Relu", ["b"], ["br"], name="relu_b"),
        helper.make_node("Concat", ["ar", "br"], ["cat"], name="cat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool", "wc", "bc"], ["y"], name="conv_c", pads=[1] * 4),
    ]
    graph = helper.make_graph(
        nodes,
        "branches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_onnxruntime_qdq_output_reports_concat_requantization(tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(2)
            self.batches = iter([{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    fp32, qdq = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    _float_model(fp32)
    quantization.quantize_static(
        str(fp32),
        str(qdq),
        Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    report = predict_fusions(load_model(qdq))
    # conv_b's output range is ~20x conv_a's, and onnxruntime gives each Concat input its own scale:
    # at least the small-range branch must be requantized to the Concat output scale.
    assert report.requantizations, format_report(report)
    assert any("Concat" in rq.at for rq in report.requantizations)
    assert {layer.name: layer.precision for layer in report.layers} == {
        "conv_a": "int8",
        "conv_b": "int8",
        "conv_c": "int8",
    }
    assert report.int8_mac_share == 1.0
    assert any(r.kind == "DQ" for r in report.reformats)  # the final dequantize of y
    # onnxruntime quantizes each Conv output before its Relu: the prediction flags the split fusions.
    assert len(report.split_fusions) == 2 and all("Relu" in text for text in report.split_fusions)


def test_moves_follow_node_order_dq_first_then_q_copies_depth_first():
    """The propagation's documented order: every DQ move first (first possible in node order), then Q
    moves, the copies a Q move leaves moving on before any later Q."""
    net = Net()
    x = net.qdq(net.input("x", [1, 4, 8, 8]), 0.1, "a")
    p = net.op("MaxPool", [net.op("MaxPool", [x], "p1", kernel_shape=[1, 1])], "p2", kernel_shape=[1, 1])
    y = net.qdq(net.conv(p, 4, 8, "c1"), 0.2, "y")
    m1 = net.op("MaxPool", [net.conv(y, 8, 4, "c2")], "m1", kernel_shape=[1, 1])
    m2 = net.op("MaxPool", [net.conv(y, 8, 4, "c3")], "m2", kernel_shape=[1, 1])
    b = net.qdq(net.op("Concat", [m1, m2], "cat", axis=1), 0.3, "b")
    net.conv(b, 8, 8, "c4")
    net.output("c4")
    report = predict_fusions(net.model())
    assert report.moves == [
        "DQ 'a_DQ' moved after MaxPool 'p1'",
        "DQ 'a_DQ' moved after MaxPool 'p2'",
        "Q 'b_Q' moved before Concat 'cat'",
        "Q 'b_Q' moved before MaxPool 'm1'",
        "Q 'b_Q' moved before MaxPool 'm2'",
    ]
    assert [(lp.name, lp.precision, lp.output) for lp in report.layers] == [
        ("c1", "int8", "int8"),
        ("c2", "int8", "int8"),
        ("c3", "int8", "int8"),
        ("c4", "int8", "float"),
    ]
    assert not report.reformats[1:]  # at most the Q of the graph input stays standalone

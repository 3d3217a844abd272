"""The TensorRT linter: one tiny model per rule, with a violating and a clean variant; the verify-trt pass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model
from qdq_compiler.pm import PassContext, PassManager, get_pass
from qdq_compiler.targets.lint import TrtLintError, Violation, format_violations, lint_model

F8 = TensorProto.FLOAT8E4M3FN


def _tensor(name: str, array, dtype: int | None = None) -> onnx.TensorProto:
    array = np.asarray(array)
    if dtype is None or dtype == TensorProto.FLOAT:
        return numpy_helper.from_array(array, name)
    return helper.make_tensor(name, dtype, array.shape, array.reshape(-1).tolist())


def conv_model(
    *,
    opset: int = 17,
    act_scale=0.05,
    act_zp=0,
    act_zp_dtype: int | None = TensorProto.INT8,
    weight=None,
    weight_scale=None,
    weight_axis: int | None = 0,
    op: str = "Conv",
    trans_b: int = 1,
    quantize_bias: bool = False,
    scale_dtype: int = TensorProto.FLOAT,
    extra_nodes: list[onnx.NodeProto] | None = None,
    q_output_to: str = "dq",
) -> onnx.ModelProto:
    """x -> Q -> DQ -> op(W through DQ, bias) -> y. Keyword arguments break one rule at a time."""
    c_out, c_in = 8, 4
    if op == "Conv":
        x_shape, w_shape = [1, c_in, 6, 6], (c_out, c_in, 3, 3)
    elif op == "ConvTranspose":
        x_shape, w_shape = [1, c_in, 6, 6], (c_in, c_out, 3, 3)
    elif op == "Gemm":
        x_shape, w_shape = [2, c_in], (c_out, c_in) if trans_b else (c_in, c_out)
    else:  # MatMul
        x_shape, w_shape = [2, c_in], (c_in, c_out)
    channels = w_shape[weight_axis] if weight_axis is not None else 1
    weight = np.ones(w_shape, np.int8) if weight is None else weight
    weight_scale = np.full(channels, 0.01, np.float32) if weight_scale is None else weight_scale
    inits = [
        _tensor("x_s", np.array(act_scale, np.float32), scale_dtype),
        _tensor("wq", weight),
        _tensor("ws", np.asarray(weight_scale, np.float32)),
        _tensor("wz", np.zeros(np.shape(weight_scale), np.int8)),
        _tensor("b", np.zeros(c_out, np.float32)),
    ]
    x_zp_inputs = []
    if act_zp_dtype is not None:
        inits.append(_tensor("x_z", np.array(act_zp), act_zp_dtype))
        x_zp_inputs = ["x_z"]
    axis = {"axis": weight_axis} if weight_axis is not None else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", *x_zp_inputs], ["xq"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["xq", "x_s", *x_zp_inputs], ["xd"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="w_DQ", **axis),
    ]
    bias = "b"
    if quantize_bias:
        inits += [_tensor("bq", np.zeros(c_out, np.int32)), _tensor("bs", np.float32(0.001))]
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs"], ["bd"], name="b_DQ"))
        bias = "bd"
    attrs = {"transB": trans_b} if op == "Gemm" else {"pads": [1] * 4} if op.startswith("Conv") else {}
    inputs = ["xd", "w"] if op == "MatMul" else ["xd", "w", bias]
    nodes.append(helper.make_node(op, inputs, ["y"], name="layer", **attrs))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if q_output_to == "relu":  # the activation Q also feeds a Relu directly
        nodes.append(helper.make_node("Relu", ["xq"], ["r"], name="relu_on_q"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    elif q_output_to == "output":
        outputs.append(helper.make_tensor_value_info("xq", TensorProto.INT8, None))
    nodes += extra_nodes or []
    graph = helper.make_graph(
        nodes, "lint", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def lint(proto: onnx.ModelProto) -> list[Violation]:
    return lint_model(load_model(proto))


def rules_of(proto: onnx.ModelProto, severity: str = "error") -> set[str]:
    return {v.rule for v in lint(proto) if v.severity == severity}


def test_clean_model_has_no_violations():
    assert lint(conv_model()) == []
    assert format_violations([]) == "TensorRT lint: no violations"


def test_qoperator_ops_are_errors():
    node = helper.make_node("QLinearConv", ["a", "b", "c", "d", "e", "f", "g", "h"], ["o"], name="qconv")
    proto = conv_model(extra_nodes=[node])
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in "abcdefgh"]
    proto.graph.input.extend(inputs)
    found = lint(proto)  # its inputs are defined: load refuses a node reading undefined values
    assert [(v.rule, v.node) for v in found] == [("qoperator-op", "qconv")]


def test_contrib_domain_qdq_is_an_error():
    node = helper.make_node("QuantizeLinear", ["x", "x_s"], ["o"], name="ms_q", domain="com.microsoft")
    proto = conv_model(extra_nodes=[node])
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert rules_of(proto) == {"contrib-qdq"}


def test_opset_below_13():
    assert rules_of(conv_model(opset=12)) == {"opset"}  # per-channel weights need the axis attribute
    per_tensor = conv_model(opset=12, weight_axis=None, weight_scale=np.float32(0.01))
    assert rules_of(per_tensor) == set() and rules_of(per_tensor, "warning") == {"opset"}
    assert lint(conv_model(opset=13)) == []


def test_zero_point_must_be_zero():
    found = lint(conv_model(act_zp=3))
    assert {(v.rule, v.node) for v in found} == {("zero-point", "x_Q"), ("zero-point", "x_DQ")}
    assert lint(conv_model(act_zp=0)) == []


def test_uint8_and_default_uint8_are_errors():
    assert rules_of(conv_model(act_zp=0, act_zp_dtype=TensorProto.UINT8)) == {"quant-type"}
    missing_zp = [v for v in lint(conv_model(act_zp_dtype=None)) if v.rule == "quant-type"]
    assert [v.node for v in missing_zp] == ["x_Q", "x_DQ"]  # the DQ then reads uint8 too
    assert "defaults to uint8" in missing_zp[0].message


def test_fp8_needs_opset_19():
    assert rules_of(conv_model(act_zp=0.0, act_zp_dtype=F8, opset=17)) == {"quant-type"}
    assert rules_of(conv_model(act_zp=0.0, act_zp_dtype=F8, opset=19)) == set()


def test_scale_must_be_constant():
    proto = conv_model()
    proto.graph.initializer.remove(next(t for t in proto.graph.initializer if t.name == "x_s"))
    proto.graph.input.append(helper.make_tensor_value_info("x_s", TensorProto.FLOAT, []))
    assert rules_of(proto) == {"scale-constant"}


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_scale_must_be_finite_and_positive(bad):
    assert rules_of(conv_model(act_scale=bad)) == {"scale-value"}


def test_scale_dtype():
    assert rules_of(conv_model(scale_dtype=TensorProto.FLOAT16), "warning") == {"scale-dtype"}
    # ... and on the float32 input of a Q it is invalid ONNX (opset 13-18: float32 only; 19: one type)
    assert rules_of(conv_model(scale_dtype=TensorProto.FLOAT16)) == {"float16-qdq"}
    assert rules_of(conv_model(opset=19, scale_dtype=TensorProto.FLOAT16)) == {"float16-qdq"}
    assert rules_of(conv_model(scale_dtype=TensorProto.DOUBLE)) == {"scale-dtype"}


def test_axis_must_match_scale_length():
    found = lint(conv_model(weight_scale=np.full(4, 0.01, np.float32)))
    assert [(v.rule, v.node) for v in found] == [("axis", "w_DQ")]
    assert "4 values" in found[0].message


def test_per_channel_scale_on_an_activation_is_an_error():
    extra = [
        helper.make_node("QuantizeLinear", ["y", "cs", "cz"], ["yq"], name="y_Q", axis=1),
        helper.make_node("DequantizeLinear", ["yq", "cs", "cz"], ["yd"], name="y_DQ", axis=1),
    ]
    proto = conv_model(extra_nodes=extra)
    proto.graph.initializer.extend(
        [_tensor("cs", np.full(8, 0.1, np.float32)), _tensor("cz", np.zeros(8, np.int8))]
    )
    found = lint(proto)
    assert {(v.rule, v.node) for v in found} == {
        ("per-channel-activation", "y_Q"),
        ("per-channel-activation", "y_DQ"),
    }


@pytest.mark.parametrize(
    ("op", "trans_b", "good", "bad"),
    [
        ("Conv", 1, 0, 1),
        ("ConvTranspose", 1, 1, 0),
        ("Gemm", 1, 0, 1),
        ("Gemm", 0, 1, 0),
        ("MatMul", 0, 1, 0),
    ],
)
def test_weight_axis_follows_the_consumer(op, trans_b, good, bad):
    assert lint(conv_model(op=op, trans_b=trans_b, weight_axis=good)) == []
    found = lint(conv_model(op=op, trans_b=trans_b, weight_axis=bad))
    assert [(v.rule, v.node) for v in found] == [("weight-axis", "w_DQ")]
    assert op in found[0].message


def test_quantized_bias_is_an_error():
    found = lint(conv_model(quantize_bias=True))
    assert [(v.rule, v.node) for v in found] == [("bias-quantized", "layer")]  # INT32 type not reported twice
    assert "b_DQ" in found[0].message


@pytest.mark.parametrize("target", ["relu", "output"])
def test_q_must_feed_only_dq(target):
    found = lint(conv_model(q_output_to=target))
    assert [(v.rule, v.node) for v in found] == [("q-without-dq", "x_Q")]


def test_int8_weights_must_avoid_minus_128():
    weight = np.ones((8, 4, 3, 3), np.int8)
    weight[0, 0, 0, 0] = -128
    found = lint(conv_model(weight=weight))
    assert [(v.rule, v.node) for v in found] == [("weight-range", "w_DQ")]
    weight[0, 0, 0, 0] = -127
    assert lint(conv_model(weight=weight)) == []


def test_float_weight_behind_q_dq_is_checked_through_the_pair():
    proto = conv_model()
    graph = proto.graph
    dq = next(n for n in graph.node if n.name == "w_DQ")
    graph.initializer.extend(
        [
            _tensor("wf", np.ones((8, 4, 3, 3), np.float32)),
            _tensor("ws4", np.full(4, 0.01, np.float32)),
            _tensor("wz4", np.zeros(4, np.int8)),
        ]
    )
    quantize = helper.make_node("QuantizeLinear", ["wf", "ws4", "wz4"], ["wq2"], name="w_Q", axis=1)
    graph.node.insert(0, quantize)
    dq.input[:] = ["wq2", "ws4", "wz4"]
    del dq.attribute[:]
    dq.attribute.append(helper.make_attribute("axis", 1))
    found = lint(proto)
    assert {(v.rule, v.node) for v in found} == {("weight-axis", "w_Q"), ("weight-axis", "w_DQ")}


def test_format_violations_one_line_each():
    text = format_violations(lint(conv_model(act_zp=3, quantize_bias=True)))
    lines = text.splitlines()
    assert lines[-1] == "TensorRT lint: 3 error(s), 0 warning(s)"
    assert all(line.startswith("error") and "[" in line for line in lines[:-1])


def test_verify_trt_pass_counts_and_raises():
    pass_cls = get_pass("verify-trt")
    clean = load_model(conv_model())
    result = pass_cls().run(clean, PassContext())
    assert not result.modified
    assert (result.statistics["num-lint-errors"], result.statistics["num-lint-warnings"]) == (0, 0)
    with pytest.raises(TrtLintError, match="zero-point") as info:
        pass_cls().run(load_model(conv_model(act_zp=3)), PassContext())
    assert isinstance(info.value, QdqcError) and len(info.value.violations) == 2


def test_verify_trt_fail_on_warning():
    pass_cls = get_pass("verify-trt")
    # per-tensor Q/DQ below opset 13: one model-level warning, no error (a float16 scale on the float32 input
    # is invalid ONNX, an error of rule float16-qdq, so it no longer makes a warnings-only model)
    warned = load_model(conv_model(opset=12, weight_axis=None, weight_scale=np.float32(0.01)))
    assert pass_cls().run(warned, PassContext()).statistics["num-lint-warnings"] == 1
    with pytest.raises(TrtLintError, match="opset"):
        pass_cls(pass_cls.Options(fail_on_warning=True)).run(warned, PassContext())


def test_verify_trt_in_a_pipeline():
    with pytest.raises(QdqcError, match="verify-trt"):
        PassManager("verify-trt").run(load_model(conv_model(quantize_bias=True)), stamp=False)


def test_lint_decodes_each_constant_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded model's initializers are decoded from their protos at every read; the linter reads each
    scale from its Q, its DQ and the layer's bias check, so it keeps what it decoded (once per constant)."""
    import onnx_ir as ir

    from qdq_compiler.ir.editing import constant_array

    proto = conv_model(weight_scale=np.full(8, 0.02, np.float32))
    model = load_model(proto)
    decoded: list[str | None] = []
    decode = ir.TensorProtoTensor.numpy

    def counting(self):
        decoded.append(self.name)
        return decode(self)

    monkeypatch.setattr(ir.TensorProtoTensor, "numpy", counting)
    assert lint_model(model) == []
    constants = [v for v in model.graph.initializers.values() if constant_array(v) is not None]
    decoded.clear()
    assert lint_model(model) == []
    assert decoded and len(decoded) == len(set(decoded)) <= len(constants)

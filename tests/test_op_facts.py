"""ONNX operator facts (ir/op_facts.py) and the INT8 grid (quant/grid.py), each read from its one home."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from qdq_compiler.ir.editing import add_constant
from qdq_compiler.ir.op_facts import (
    DEFAULT_QDQ_AXIS,
    default_opset,
    is_activation_quantizer,
    is_weight_qdq,
    is_weight_quantizer,
    node_label,
    qdq_axis,
    weight_channels,
    weighted_op,
)
from qdq_compiler.quant.grid import INT8_MAX, integer_range, quantize_symmetric, scale_from_amax


def _node(op_type: str, **ints: int) -> ir.Node:
    attrs = [ir.AttrInt64(name, value) for name, value in ints.items()]
    return ir.Node("", op_type, [], attributes=attrs, num_outputs=1)


@pytest.mark.parametrize(
    ("op_type", "attrs", "dims", "rank", "channels", "axis"),
    [
        ("Conv", {}, (8, 3, 3, 3), 4, (3, 8), 0),
        ("ConvTranspose", {"group": 2}, (4, 5, 3, 3), 4, (4, 10), 1),
        ("Gemm", {}, (16, 32), 2, (16, 32), 1),
        ("Gemm", {"transB": 1}, (32, 16), 2, (16, 32), 0),
        ("MatMul", {}, (2, 16, 32), 3, (16, 32), 2),
    ],
)
def test_weighted_op_channels_and_output_axis(op_type, attrs, dims, rank, channels, axis) -> None:
    node = _node(op_type, **attrs)
    op = weighted_op(node)
    assert op is not None and op.weight_input == 1
    assert weight_channels(node, dims) == channels
    assert op.output_channel_axis(node, rank) == axis


def test_non_weighted_and_foreign_ops_have_no_facts() -> None:
    assert weighted_op(_node("Relu")) is None
    assert weighted_op(ir.Node("com.microsoft", "Conv", [], num_outputs=1)) is None


def test_qdq_axis_defaults_to_one_and_keeps_a_written_axis() -> None:
    assert DEFAULT_QDQ_AXIS == 1
    assert qdq_axis(_node("DequantizeLinear")) == 1
    assert qdq_axis(_node("DequantizeLinear", axis=-1)) == -1


def test_default_opset_reads_the_ai_onnx_alias() -> None:
    assert default_opset({"": 17}) == 17
    assert default_opset({"ai.onnx": 13}) == 13
    assert default_opset({}, missing=1) == 1


def test_weight_and_activation_quantizers() -> None:
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1, 4]))
    graph = ir.Graph([x], [], nodes=[], name="g")
    weight = add_constant(graph, np.ones((4, 4), np.float32), "w")
    scale = add_constant(graph, np.array(0.1, np.float32), "s")
    q_weight = ir.Node("", "QuantizeLinear", [weight, scale], num_outputs=1, name="qw")
    q_act = ir.Node("", "QuantizeLinear", [x, scale], num_outputs=1, name="")
    dq_weight = ir.Node("", "DequantizeLinear", [q_weight.outputs[0], scale], num_outputs=1)
    graph.extend([q_weight, q_act, dq_weight])
    q_act.outputs[0].name = "xq"
    assert is_weight_quantizer(q_weight) and not is_activation_quantizer(q_weight)
    assert is_activation_quantizer(q_act) and not is_weight_quantizer(q_act)
    assert is_weight_qdq(dq_weight) and not is_weight_qdq(q_act)
    assert node_label(q_weight) == "qw" and node_label(q_act) == "QuantizeLinear(xq)"


def test_the_int8_grid() -> None:
    assert INT8_MAX == 127
    assert scale_from_amax(12.7).dtype == np.float32
    assert scale_from_amax(np.array([12.7, 1.27])).tolist() == pytest.approx([0.1, 0.01])
    codes = quantize_symmetric(np.array([0.25, 0.75, 1.25, -1000.0, 1000.0]), np.array(0.5))
    assert codes.dtype == np.int8
    assert codes.tolist() == [0, 2, 2, -127, 127]  # round half to even; weights stop at -127, not -128
    assert integer_range(np.int8) == (-128, 127) and integer_range(np.uint8) == (0, 255)


def test_messages_name_a_node_one_way_in_ir_and_proto_checks() -> None:
    """The proto wiring check and the IR verifier name the same node with the same phrase."""
    import onnx

    from qdq_compiler.errors import ModelLoadError, VerificationError
    from qdq_compiler.ir.op_facts import describe_node, describe_node_proto
    from qdq_compiler.ir.validate import check_graph_wiring
    from qdq_compiler.ir.verifier import verify

    proto = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) {
            y = Relu(x)
            late = Abs(y2)
            y2 = Neg(x)
        }"""
    )
    proto.graph.node[0].name = "relu"
    model = ir.serde.deserialize_model(proto)
    proto.graph.node[1].input[0] = "nowhere"
    with pytest.raises(ModelLoadError) as proto_error:
        check_graph_wiring(proto, "m.onnx")
    with pytest.raises(VerificationError) as ir_error:
        verify(model, check_onnx=False)
    unnamed = next(node for node in model.graph if node.op_type == "Abs")
    assert describe_node(unnamed) == describe_node_proto(proto.graph.node[1]) == "Abs (output 'late')"
    assert describe_node(next(iter(model.graph))) == "Relu 'relu'"
    assert "Abs (output 'late') reads 'nowhere'" in str(proto_error.value)
    assert "Abs (output 'late') reads 'y2' before it is defined" in str(ir_error.value)

"""The MAC cost model (qdq_compiler.targets.macs): counts by hand, derived Conv shapes vs ONNX inference."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.ir import load_model
from qdq_compiler.targets.macs import conv_output_shape, inferred_shapes, layer_macs


def _model(node: onnx.NodeProto, x_shape: list[int], weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"strides": [2, 2], "pads": [1, 0, 2, 1]},
        {"dilations": [2, 1], "pads": [2, 1, 2, 1]},
        {"auto_pad": "SAME_UPPER", "strides": [2, 3]},
        {"auto_pad": "VALID", "strides": [2, 2]},
        {"group": 2},
    ],
)
def test_conv_output_shape_matches_shape_inference(attrs: dict) -> None:
    group = attrs.get("group", 1)
    weight = np.zeros((6, 4 // group, 3, 3), np.float32)
    proto = _model(helper.make_node("Conv", ["x", "w"], ["y"], **attrs), [1, 4, 11, 13], weight)
    model = load_model(proto)
    shapes = inferred_shapes(model)
    derived = conv_output_shape(next(iter(model.graph)), {k: v for k, v in shapes.items() if k != "y"})
    assert derived == shapes["y"]


def test_layer_macs_counts_by_hand() -> None:
    conv = _model(
        helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2]),
        [1, 4, 9, 9],
        np.zeros((6, 2, 3, 3), np.float32),
    )
    conv.graph.node[0].attribute.append(helper.make_attribute("group", 2))
    model = load_model(conv)
    # output 1x6x4x4, each output value sums Cin/group * kh * kw = 2 * 3 * 3 products
    assert layer_macs(next(iter(model.graph)), inferred_shapes(model)) == 1 * 6 * 4 * 4 * 2 * 3 * 3
    gemm = load_model(
        _model(helper.make_node("Gemm", ["x", "w"], ["y"], transB=1), [3, 5], np.zeros((7, 5), np.float32))
    )
    assert layer_macs(next(iter(gemm.graph)), inferred_shapes(gemm)) == 3 * 7 * 5
    matmul = load_model(
        _model(helper.make_node("MatMul", ["x", "w"], ["y"]), [2, 3, 5], np.zeros((5, 4), np.float32))
    )
    assert layer_macs(next(iter(matmul.graph)), inferred_shapes(matmul)) == 2 * 3 * 4 * 5


def test_missing_conv_output_is_derived_only_when_asked() -> None:
    model = load_model(
        _model(helper.make_node("Conv", ["x", "w"], ["y"]), [1, 4, 8, 8], np.zeros((2, 4, 3, 3), np.float32))
    )
    node = next(iter(model.graph))
    shapes = {k: v for k, v in inferred_shapes(model).items() if k != "y"}
    assert layer_macs(node, shapes) is None
    assert layer_macs(node, shapes, derive_conv_output=True) == 2 * 6 * 6 * 4 * 3 * 3


def test_model_shapes_reads_recorded_shapes_else_infers() -> None:
    from qdq_compiler.pm import PassContext, PassManager
    from qdq_compiler.targets.macs import model_shapes

    proto = _model(
        helper.make_node("Conv", ["x", "w"], ["y"]), [1, 4, 8, 8], np.zeros((2, 4, 3, 3), np.float32)
    )
    bare = load_model(proto)
    assert next(iter(bare.graph)).outputs[0].shape is None  # nothing recorded: shape inference runs
    assert model_shapes(bare)["y"] == (1, 2, 6, 6)
    recorded = load_model(proto)
    PassManager("infer-shapes").run(recorded, PassContext())
    output = next(iter(recorded.graph)).outputs[0]
    output.shape = ir.Shape([1, 2, 5, 5])  # a recorded shape wins (here deliberately not the inferred one)
    assert model_shapes(recorded)["y"] == (1, 2, 5, 5)

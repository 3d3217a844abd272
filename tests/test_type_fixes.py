"""Bugs the type checker (mypy) found: each test failed before its fix."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager


def _conv_with_dequantized_weight() -> onnx.ModelProto:
    """Conv(x, DQ(int8 weight)) -> Relu -> Conv(float weight): the first layer arrives already quantized and,
    without shape inference, its weight's shape is unknown."""
    rng = np.random.default_rng(0)
    w1 = rng.integers(-127, 128, size=(16, 3, 3, 3)).astype(np.int8)
    w2 = rng.normal(0, 0.1, size=(16, 16, 3, 3)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(w1, "w1_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w1_scale"),
        numpy_helper.from_array(w2, "w2"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w1_q", "w1_scale"], ["w1"], name="w1_DQ"),
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "dq_weight",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_place_qdq_takes_an_already_quantized_weight_of_unknown_shape() -> None:
    """place-qdq's channel count returned a bare int for such a weight (mypy: return-value), so deciding the
    layer raised TypeError; now the layer is quantized and the model stays close to the float one."""
    proto = _conv_with_dequantized_weight()
    rng = np.random.default_rng(1)
    batches = [{"x": rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    model = load_model(proto)
    PassManager("place-qdq,calibrate").run(model, PassContext(calibration_data=batches))
    compiled = to_proto(model)
    ops = [node.op_type for node in compiled.graph.node]
    conv1 = next(node for node in compiled.graph.node if node.name == "conv1")
    producers = {out: node.op_type for node in compiled.graph.node for out in node.output}
    assert producers[conv1.input[0]] == "DequantizeLinear"  # the layer was decided INT8
    assert ops.count("QuantizeLinear") == 1  # x, for conv1; conv2 is the detection-head layer, kept float
    reference = run_outputs(proto, batches)["y"]
    quantized = run_outputs(compiled, batches)["y"]
    assert sqnr_db(reference, quantized) > 25.0


def test_layer_report_whose_layers_is_not_a_list_is_refused(tmp_path) -> None:
    """A 'Layers' (or 'I/O Tensors') value that is not a list was iterated as is (mypy: a union with None was
    iterated): a number gave an internal TypeError, a string a report of one layer per character."""
    import pytest

    from qdq_compiler.targets.layer_report import LayerReportError, read_layer_report

    for bad, key in (
        ('{"Layers": 5}', "Layers"),
        ('{"Layers": "abc"}', "Layers"),
        ('{"Layers": [], "I/O Tensors": 5}', "I/O Tensors"),
    ):
        path = tmp_path / "layers.json"
        path.write_text(bad)
        with pytest.raises(LayerReportError, match=f"'{key}'"):
            read_layer_report(path)


def test_float_view_keeps_a_dequantize_whose_scale_is_computed() -> None:
    """float_view folded every DQ of a constant, also one whose scale is no constant (mypy: a possibly-None
    scale reached dequantize), and raised AttributeError; such a DQ now stays, computed at run time."""
    from qdq_compiler.quant.float_view import float_view

    w_q = np.arange(-8, 8, dtype=np.int8).reshape(2, 2, 2, 2)
    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["s_in"], ["s"], name="scale_abs"),
            helper.make_node("DequantizeLinear", ["w_q", "s"], ["w"], name="w_DQ"),
            helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
        ],
        "computed_scale",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]),
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
        [numpy_helper.from_array(w_q, "w_q")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    view = float_view(load_model(proto))
    rng = np.random.default_rng(2)
    batches = [{"x": rng.normal(size=(1, 2, 4, 4)).astype(np.float32), "s_in": np.array(-0.05, np.float32)}]
    np.testing.assert_allclose(run_outputs(view, batches)["y"], run_outputs(proto, batches)["y"], rtol=1e-6)

"""Work `qdqc explain` no longer does on large graphs (issue 14's scale target: lint and fusion prediction).

As in test_perf_work.py, nothing is timed: each test counts the work a speed fix removed (proto decodes,
collections, copied nodes and values) so that the fix cannot silently come undone.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_ir.serde import TensorProtoTensor

from qdq_compiler.ir import load_model
from qdq_compiler.ir.tensor_data import tensor_array
from qdq_compiler.targets import lint
from qdq_compiler.targets.constant_arrays import ConstantArrays, constant_dtype
from qdq_compiler.targets.fusion import predict_fusions
from qdq_compiler.targets.lint import lint_model
from qdq_compiler.targets.qdq_propagation import working_copy


def _conv_model(low_weight: bool = False, weight_also_concat: bool = False) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(INT8 weight -> DQ, float bias) -> Relu -> Q/DQ -> y; optionally a -128 weight, or
    the weight's DQ also read by a Concat (not as a weight)."""
    weight = np.ones((2, 2, 1, 1), np.int8)
    if low_weight:
        weight[0, 0, 0, 0] = -128
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(np.array(0.2, np.float32), "s2"),
        numpy_helper.from_array(np.array(0, np.int8), "z2"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.full(2, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(2, np.int8), "wz"),
        numpy_helper.from_array(np.full(2, 0.5, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="in_Q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="in_DQ"),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["xd", "wd", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "s2", "z2"], ["rq"], name="out_Q"),
        helper.make_node("DequantizeLinear", ["rq", "s2", "z2"], ["y"], name="out_DQ"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])]
    if weight_also_concat:
        nodes.append(helper.make_node("Concat", ["wd", "wd"], ["cat"], name="cat", axis=0))
        outputs.append(helper.make_tensor_value_info("cat", TensorProto.FLOAT, [4, 2, 1, 1]))
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = TensorProtoTensor.numpy

    def counting(self: TensorProtoTensor) -> np.ndarray:
        calls[0] += 1
        return original(self)

    monkeypatch.setattr(TensorProtoTensor, "numpy", counting)
    return calls


def test_lint_reads_plain_constants_from_their_raw_bytes_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `TensorProtoTensor.numpy()` (its per-call type lookups and proto-dims reshape) for the plain
    numeric initializers every Q/DQ reads: one decode each, from the raw bytes; a -128 weight still found."""
    decodes = _count_decodes(monkeypatch)
    assert lint_model(load_model(_conv_model())) == []
    found = lint_model(load_model(_conv_model(low_weight=True)))
    assert [(v.rule, v.node) for v in found] == [("weight-range", "w_DQ")]
    assert decodes[0] == 0  # 8 initializers read 14 times per lint run before
    constants = ConstantArrays()
    model = load_model(_conv_model())
    for value in [*model.graph.initializers.values(), *model.graph.initializers.values()]:
        constants.array(value)
    assert constants.decoded == len(model.graph.initializers)


def test_fusion_prediction_decodes_no_proto_through_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = _count_decodes(monkeypatch)
    report = predict_fusions(load_model(_conv_model()))
    assert [(layer.name, layer.precision, layer.output) for layer in report.layers] == [
        ("conv", "int8", "int8")
    ]
    assert decodes[0] == 0  # one per Q/DQ scale before


@pytest.mark.parametrize(
    "array",
    [
        np.float32(0.25),
        np.array([1.5, -2.0, 3.0], np.float32),
        np.arange(24, dtype=np.int8).reshape(2, 3, 4, 1),
        np.array([[1, 2]], np.int64),
        np.array([0.5, 1.0], np.float16),
        np.array([7], np.uint8),
        np.zeros((0, 3), np.float32),
    ],
)
def test_tensor_array_matches_onnx_ir(array: np.ndarray) -> None:
    tensor = TensorProtoTensor(numpy_helper.from_array(np.asarray(array), "t"))
    got, want = tensor_array(tensor), tensor.numpy()
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_constant_dtype_matches_value_dtype() -> None:
    from qdq_compiler.ir.op_facts import value_dtype

    model = load_model(_conv_model())
    values = [*model.graph.initializers.values(), *(n.outputs[0] for n in model.graph), *model.graph.inputs]
    assert [constant_dtype(v) for v in values] == [value_dtype(v) for v in values]


def test_lint_runs_with_the_collector_paused() -> None:
    """A collection walks every object of the loaded model to find no garbage: lint starts none."""
    model = load_model(_conv_model())
    collections = [0]

    def count(phase: str, info: dict) -> None:
        frame = sys._getframe(1)
        while frame is not None and phase == "start":
            if frame.f_code is lint._lint.__code__:  # a collection while the checks run
                collections[0] += 1
                return
            frame = frame.f_back

    thresholds = gc.get_threshold()
    gc.callbacks.append(count)
    gc.set_threshold(1, 1, 1)  # a collection at nearly every allocation, were the collector running
    try:
        found = lint.lint_model(model)
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(count)
    assert found == [] and collections[0] == 0
    assert gc.isenabled()


def test_the_prediction_copy_leaves_out_what_nothing_moves() -> None:
    """The copy has no weight DQ, no constant scale/zero-point/bias inputs and no registered initializers
    (each was a node or value to build and collect), and the weight still counts as dequantized."""
    model = load_model(_conv_model())
    working = working_copy(model.graph)
    copy = working.graph
    assert [node.name for node in copy] == ["in_Q", "in_DQ", "conv", "relu", "out_Q", "out_DQ"]
    assert {node.name: len(node.inputs) for node in copy} == {
        "in_Q": 1,
        "in_DQ": 1,
        "conv": 2,
        "relu": 1,
        "out_Q": 1,
        "out_DQ": 1,
    }
    assert len(copy.initializers) == 0 and not working.constants
    conv = next(node for node in copy if node.name == "conv")
    assert [v.name for v in working.dequantized_weights] == ["wd"] and conv.inputs[1].name == "wd"
    assert [node.name for node in model.graph][2] == "w_DQ" and len(model.graph.initializers) == 8


def test_a_weight_dq_read_otherwise_stays_in_the_copy() -> None:
    model = load_model(_conv_model(weight_also_concat=True))
    working = working_copy(model.graph)
    assert "w_DQ" in [node.name for node in working.graph] and not working.dequantized_weights
    report = predict_fusions(model)
    assert [(layer.name, layer.precision) for layer in report.layers] == [("conv", "int8")]


def test_explain_decodes_each_constant_once_for_lint_and_prediction(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The lint and the prediction read the same activation scales: explain decodes each value once."""
    from qdq_compiler.targets import constant_arrays
    from qdq_compiler.targets.explain import explain_model

    reads: Counter[int] = Counter()
    original = constant_arrays.constant_array

    def counting(value: ir.Value | None) -> np.ndarray | None:
        reads[id(value)] += 1
        return original(value)

    monkeypatch.setattr(constant_arrays, "constant_array", counting)
    model = load_model(_conv_model())
    explained = explain_model(str(tmp_path / "conv.onnx"), model)
    assert explained.lint_errors == 0 and explained.fusion.layers[0].precision == "int8"
    scales = [model.graph.initializers[name] for name in ("s", "s2")]
    assert [reads[id(value)] for value in scales] == [1, 1]  # twice before: by the lint, by the prediction
    assert max(reads.values()) == 1


def test_the_prediction_scans_names_only_when_something_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh names are for moved Q/DQ copies: with nothing to move, the graph's names are never scanned."""
    from helpers import count_name_scans

    scans = count_name_scans(monkeypatch)
    report = predict_fusions(load_model(_conv_model()))
    assert report.moves == [] and scans[0] == 0  # one scan per prediction before
    pooled = _conv_model()
    relu = next(node for node in pooled.graph.node if node.name == "relu")
    relu.op_type = "MaxPool"
    relu.attribute.extend([helper.make_attribute("kernel_shape", [1, 1])])
    report = predict_fusions(load_model(pooled))
    assert report.moves == ["Q 'out_Q' moved before MaxPool 'relu'"] and scans[0] == 1

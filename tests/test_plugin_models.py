"""Models that end in a TensorRT plugin onnxruntime cannot run (YOLOv7 `--end2end`: TRT::EfficientNMS_TRT)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.calib.collect import collect_statistics
from qdq_compiler.calib.errors import CalibrationError
from qdq_compiler.cli import main
from qdq_compiler.ir import load_model
from qdq_compiler.quant.activation_scales import activation_quantizers
from qdq_compiler.targets import lint_model


def _with_nms(plugin: bool) -> onnx.ModelProto:
    """x [N,4,8,8] -> Conv -> Relu -> Conv -> Reshape -> boxes/scores -> (plugin NMS | nothing)."""
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal((5, 8, 1, 1)).astype(np.float32) * 0.3, "w2"),
        numpy_helper.from_array(np.array([1, 64, 5], np.int64), "shape"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([4], np.int64), "s4"),
        numpy_helper.from_array(np.array([5], np.int64), "s5"),
        numpy_helper.from_array(np.array([2], np.int64), "ax"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Reshape", ["c2", "shape"], ["flat"], name="flat"),
        helper.make_node("Slice", ["flat", "s0", "s4", "ax"], ["boxes"], name="boxes"),
        helper.make_node("Slice", ["flat", "s4", "s5", "ax"], ["scores"], name="scores"),
    ]
    outputs = [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 64, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 64, 1]),
    ]
    opsets = [helper.make_opsetid("", 17)]
    if plugin:
        nodes.append(
            helper.make_node(
                "EfficientNMS_TRT",
                ["boxes", "scores"],
                ["num_dets", "det_boxes"],
                domain="TRT",
                name="nms",
                plugin_version="1",
                score_threshold=0.25,
                iou_threshold=0.45,
                max_output_boxes=10,
            )
        )
        outputs = [
            helper.make_tensor_value_info("num_dets", TensorProto.INT32, [1, 1]),
            helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [1, 10, 4]),
        ]
        opsets.append(helper.make_opsetid("TRT", 1))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])]
    graph = helper.make_graph(nodes, "nms", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=opsets)


def test_calibration_runs_only_what_the_observed_tensors_need():
    batches = [{"x": b} for b in np.random.default_rng(5).standard_normal((3, 1, 4, 8, 8)).astype(np.float32)]
    with_plugin = collect_statistics(_with_nms(True), ["x", "a1", "flat"], batches, workers=1)
    without = collect_statistics(_with_nms(False), ["x", "a1", "flat"], batches, workers=1)
    for name, stats in without.items():
        np.testing.assert_array_equal(with_plugin[name].hist, stats.hist)
        assert (with_plugin[name].min, with_plugin[name].max) == (stats.min, stats.max)


def test_compile_keeps_the_plugin_and_quantizes_the_network_before_it(tmp_path):
    source, data, out = tmp_path / "end2end.onnx", tmp_path / "calib.npy", tmp_path / "int8.onnx"
    onnx.save(_with_nms(True), source)
    np.save(data, np.random.default_rng(6).standard_normal((8, 4, 8, 8)).astype(np.float32))
    assert main(["-q", "compile", str(source), "--calib", str(data), "--quantize-head", "-o", str(out)]) == 0
    compiled = load_model(out)
    plugins = [(node.op_type, node.domain) for node in compiled.graph if node.domain]
    assert plugins == [("EfficientNMS_TRT", "TRT")]
    assert [v.name for v in compiled.graph.outputs] == ["num_dets", "det_boxes"]
    assert {q.inputs[0].name for q in activation_quantizers(compiled.graph)} >= {"x", "a1"}
    assert not [v for v in lint_model(compiled) if v.severity == "error"]


def test_a_dropped_consumer_does_not_change_the_observed_values():
    """t feeds Mul->Relu (observed) and Sigmoid (dropped): the session must not fuse differently."""
    import onnxruntime as ort

    rng = np.random.default_rng(8)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["t"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["t", "k"], ["m"], name="mul"),
        helper.make_node("Relu", ["m"], ["v"], name="relu"),
        helper.make_node("Sigmoid", ["t"], ["side"], name="side"),
    ]
    graph = helper.make_graph(
        nodes,
        "fuse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 8, 16, 16])],
        [
            numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(np.float32(1.7), "k"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 8, 16, 16)).astype(np.float32) * 10
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    reference.graph.output.append(onnx.ValueInfoProto(name="v"))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(reference.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run(["v"], {"x": x})[0]
    stats = collect_statistics(model, ["v"], [{"x": x}], workers=1)["v"]
    assert (stats.min, stats.max) == (float(expected.min()), float(expected.max()))


def test_an_observed_tensor_behind_the_plugin_is_refused_by_name():
    model = _with_nms(True)
    model.graph.node.append(helper.make_node("Relu", ["det_boxes"], ["after"], name="after"))
    with pytest.raises(CalibrationError, match="EfficientNMS_TRT 'nms'.*cannot run"):
        collect_statistics(model, ["a1", "after"], [{"x": np.zeros((1, 4, 8, 8), np.float32)}], workers=1)


def test_onnxruntime_part_cuts_before_the_plugin():
    from qdq_compiler.accuracy import onnxruntime_part

    cut, foreign = onnxruntime_part(_with_nms(True))
    assert foreign == ["TRT::EfficientNMS_TRT 'nms'"]
    assert [out.name for out in cut.graph.output] == ["boxes", "scores"]
    assert all(node.domain == "" for node in cut.graph.node)
    plain = _with_nms(False)
    assert onnxruntime_part(plain) == (plain, [])


def test_sensitivity_compares_a_plugin_model_before_the_plugin(tmp_path, capsys):
    source, data = tmp_path / "end2end.onnx", tmp_path / "calib.npy"
    onnx.save(_with_nms(True), source)
    np.save(data, np.random.default_rng(6).standard_normal((8, 4, 8, 8)).astype(np.float32))
    args = ["-q", "sensitivity", str(source), "--calib", str(data), "--quantize-head", "--top", "1", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compared_before"] == ["TRT::EfficientNMS_TRT 'nms'"]
    assert set(report["baseline"]["sqnr_db_per_output"]) == {"boxes", "scores"}
    assert {item["layer"] for item in report["layers"]} == {"conv1", "conv2"}

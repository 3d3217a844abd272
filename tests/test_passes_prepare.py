"""The float-cleaning passes on whole test models: effect, numerics, idempotence."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import max_relative_error, random_feeds, run_onnx

from qdq_compiler.ir import load_model, op_counts, to_proto
from qdq_compiler.models import TEST_MODELS
from qdq_compiler.pm import PassContext, PassManager

PASSES = ["infer-shapes", "canonicalize", "fold-constants", "fold-bn"]


def _run(proto: onnx.ModelProto, pipeline: str):
    model = load_model(proto)
    results = PassManager(pipeline).run(model, PassContext())
    return model, results


def test_canonicalize_fold_bn_on_yolov7_tiny() -> None:
    proto = TEST_MODELS["yolov7_tiny"]()
    before = op_counts(load_model(proto).graph)
    assert before["BatchNormalization"] > 0 and before["Identity"] > 0
    model, results = _run(proto, "canonicalize,fold-bn")
    after = op_counts(model.graph)
    assert after["BatchNormalization"] == 0 and after["Identity"] == 0 and after["Dropout"] == 0
    assert results[1].statistics["num-bn-folded"] == before["BatchNormalization"]
    feeds = random_feeds(proto)
    compiled = to_proto(model)
    onnx.checker.check_model(compiled, full_check=True)
    for expected, actual in zip(run_onnx(proto, feeds), run_onnx(compiled, feeds)):
        assert expected.shape == actual.shape
        assert max_relative_error(expected, actual) < 1e-4


@pytest.mark.parametrize("name", sorted(TEST_MODELS))
def test_prepare_pipeline_preserves_outputs(name: str) -> None:
    proto = TEST_MODELS[name]()
    model, _ = _run(proto, "prepare")
    compiled = to_proto(model)
    onnx.checker.check_model(compiled, full_check=True)
    assert [o.name for o in compiled.graph.output] == [o.name for o in proto.graph.output]
    feeds = random_feeds(proto, seed=1)
    for expected, actual in zip(run_onnx(proto, feeds), run_onnx(compiled, feeds)):
        assert max_relative_error(expected, actual) < 1e-4


def test_fold_constants_removes_shape_arithmetic() -> None:
    proto = TEST_MODELS["yolov7_tiny"]()
    assert op_counts(load_model(proto).graph)["Shape"] > 0
    model, _ = _run(proto, "infer-shapes,fold-constants")
    counts = op_counts(model.graph)
    assert counts["Shape"] == 0 and counts["Gather"] == 0 and counts["Unsqueeze"] == 0


def test_canonicalize_merges_duplicate_constants() -> None:
    model, results = _run(TEST_MODELS["yolov7_tiny"](), "canonicalize")
    assert results[0].statistics["num-duplicate-constants-merged"] >= 1


@pytest.mark.parametrize("pass_name", PASSES)
def test_second_run_reports_unmodified(pass_name: str) -> None:
    model = load_model(TEST_MODELS["yolov7_tiny"]())
    manager = PassManager(f"infer-shapes,{pass_name}")
    manager.run(model, PassContext())
    second = PassManager(pass_name).run(model, PassContext())
    assert second[0].modified is False


def test_input_proto_is_not_modified() -> None:
    proto = TEST_MODELS["yolov7_tiny"]()
    before = proto.SerializeToString()
    _run(proto, "prepare")
    assert proto.SerializeToString() == before


def test_fold_bn_leaves_shared_weights_intact() -> None:
    """Two convs share one weight; folding BN into one must not change the other."""
    proto = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 1, 3, 3] x) => (float[1, 2, 3, 3] y, float[1, 2, 3, 3] z)
          <float[2, 1, 1, 1] w = {1.0, 2.0}, float[2] gamma = {2.0, 0.5}, float[2] beta = {1.0, -1.0},
           float[2] mean = {0.5, 1.0}, float[2] var = {4.0, 0.25}> {
           c = Conv(x, w)
           y = BatchNormalization(c, gamma, beta, mean, var)
           z = Conv(x, w)
        }"""
    )
    model, results = _run(proto, "fold-bn")
    assert results[0].statistics["num-bn-folded"] == 1
    feeds = {"x": np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)}
    for expected, actual in zip(run_onnx(proto, feeds), run_onnx(to_proto(model), feeds)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_prepare_on_the_pytorch_exported_detector() -> None:
    """The bundled detector is a real torch.onnx export (tools/train_detector.py); prepare keeps outputs."""
    from qdq_compiler.detect import bundled

    proto = onnx.load(str(bundled.model_path()))
    counts = op_counts(load_model(proto).graph)
    assert counts["BatchNormalization"] > 0
    model, _ = _run(proto, "prepare")
    assert op_counts(model.graph)["BatchNormalization"] == 0
    feeds = random_feeds(proto, seed=2)
    for expected, actual in zip(run_onnx(proto, feeds), run_onnx(to_proto(model), feeds)):
        assert max_relative_error(expected, actual) < 1e-4


def _count_shape_inference(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls of ONNX shape inference from now on (the list's length)."""
    calls: list[int] = []
    infer = onnx.shape_inference.infer_shapes

    def counting(*args, **kwargs):
        calls.append(1)
        return infer(*args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counting)
    return calls


def test_prepare_infers_shapes_once_when_nothing_changed_in_between(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare's second infer-shapes is skipped when no pass since the first one modified the graph (it
    serializes the whole model and would find nothing new), but not when infer-shapes runs by itself."""
    from qdq_compiler.models.synthetic import build_scale_model

    proto = build_scale_model("chain", 40)
    calls = _count_shape_inference(monkeypatch)
    model, results = _run(proto, "prepare")
    assert [p.name for p in PassManager("prepare").passes].count("infer-shapes") == 2
    assert len(calls) == 1 and not any(r.modified for r in results[1:])
    assert all(v.shape is not None for node in model.graph for v in node.outputs)
    # Different options are a different fact; a pass run outside a PassManager knows no facts.
    _run(proto, "infer-shapes,infer-shapes{data-prop=false}")
    assert len(calls) == 3
    from qdq_compiler.pm import get_pass

    infer = get_pass("infer-shapes")()
    infer.run(model, PassContext())
    infer.run(model, PassContext())
    assert len(calls) == 5


def test_prepare_infers_shapes_again_after_a_pass_changed_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    proto = TEST_MODELS["yolov7_tiny"]()
    calls = _count_shape_inference(monkeypatch)
    _, results = _run(proto, "prepare")
    assert results[3].modified  # fold-bn folded the BatchNormalizations
    assert len(calls) == 2


def _twin_weight_model(with_identity: bool) -> onnx.ModelProto:
    """x -> Conv(w) -> Relu -> Conv(w_twin) -> y, where w_twin holds w's bytes under another name; a dead
    Neg; with ``with_identity`` an Identity between the Relu and the second Conv."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(3).standard_normal((2, 2, 3, 3)).astype(np.float32)
    relu_out = "relu_copy" if with_identity else "relu"
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Neg", ["x"], ["unused"]),
        helper.make_node("Conv", [relu_out, "w_twin"], ["y"], pads=[1, 1, 1, 1]),
    ]
    if with_identity:
        nodes.insert(2, helper.make_node("Identity", ["relu"], ["relu_copy"]))
    graph = helper.make_graph(
        nodes,
        "twins",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(weight.copy(), "w_twin")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("with_identity", [False, True])
def test_canonicalize_keeps_shapes_inferred_when_it_only_merged_constants_and_removed_dead_code(
    monkeypatch: pytest.MonkeyPatch, with_identity: bool
) -> None:
    """A merge of equal constants or the removal of a dead node changes no value's type or shape, so
    prepare's second infer-shapes has nothing to find (a second full inference, 1.6 s of the 40k-node
    fan-in bench, where 5 of its random weights are equal). A removed Identity is not such an edit: there
    inference runs again. The outputs equal the float model's in onnxruntime either way."""
    proto = _twin_weight_model(with_identity)
    calls = _count_shape_inference(monkeypatch)
    model, results = _run(proto, "prepare")
    canonicalized = results[1].statistics
    assert canonicalized["num-duplicate-constants-merged"] == 1 and canonicalized["num-dead-removed"] >= 1
    assert canonicalized["num-identity-removed"] == int(with_identity)
    assert len(calls) == (2 if with_identity else 1)
    assert all(v.shape is not None for node in model.graph for v in node.outputs)
    feeds = random_feeds(proto, seed=4)
    for expected, actual in zip(run_onnx(proto, feeds), run_onnx(to_proto(model), feeds)):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)

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

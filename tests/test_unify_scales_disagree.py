"""unify-scales{disagree=float}: a scale group whose members' ranges differ by more than max-ratio stays
float instead of being split (issue 15, 3); the compiled model is checked against float in onnxruntime."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from helpers import concat_of_distant_ranges, graph_model
from onnx import helper

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pipelines import TRT_INT8
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.quant.decisions import layer_decisions
from qdq_compiler.targets import lint_model

CHANNELS, SIDE = 8, 6
# equalize-channels would bring these Concats' members together by itself (it rescales members produced by
# convs); these tests are about unify-scales' answer to members that still disagree, so it is left out.
BASE = TRT_INT8.replace("equalize-channels,", "")
GROUP_FLOAT = BASE.replace("unify-scales", "unify-scales{disagree=float}")


def _concat_read_only_by_itself(ratio: float) -> onnx.ModelProto:
    """x -> conv1 -> a; x -> conv2 (gain ~ratio) -> b; Concat(a, b) -> conv3 -> conv4 -> y: a and b feed only
    the Concat, so only its output is quantized, and TensorRT moves that Q onto both inputs (the segmenter's
    FPN Concat)."""
    rng = np.random.default_rng(3)
    weights = {
        "w1": rng.uniform(-0.1, 0.1, (CHANNELS, CHANNELS, 1, 1)),
        "w2": rng.uniform(-1.0, 1.0, (CHANNELS, CHANNELS, 1, 1)) * ratio / 10,
        "w3": np.concatenate(
            [
                rng.uniform(-1.0, 1.0, (CHANNELS, CHANNELS, 1, 1)),
                rng.uniform(-1, 1, (CHANNELS, CHANNELS, 1, 1)) / ratio,
            ],
            axis=1,
        ),
        "w4": rng.uniform(-1.0, 1.0, (CHANNELS, CHANNELS, 1, 1)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
        helper.make_node("Conv", ["x", "w2"], ["b"], name="conv2"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="concat", axis=1),
        helper.make_node("Conv", ["cat", "w3"], ["d"], name="conv3"),
        helper.make_node("Conv", ["d", "w4"], ["y"], name="conv4"),
    ]
    shape = (1, CHANNELS, SIDE, SIDE)
    return graph_model(nodes, {k: v.astype(np.float32) for k, v in weights.items()}, shape, {"y": shape})


def _samples(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, CHANNELS, SIDE, SIDE)).astype(np.float32)


def _compile(model: onnx.ModelProto, pipeline: str) -> onnx.ModelProto:
    ir_model = load_model(model)
    PassManager(pipeline).run(ir_model, PassContext(calibration_data=_samples(8, 1)))
    compiled = to_proto(ir_model)
    onnx.checker.check_model(compiled, full_check=True)
    return compiled


def _sqnr(float_model: onnx.ModelProto, compiled: onnx.ModelProto) -> float:
    samples = _samples(4, 11)
    batches = [{"x": samples[i : i + 1]} for i in range(len(samples))]
    return sqnr_db(run_outputs(float_model, batches)["y"], run_outputs(compiled, batches)["y"])


def _quantized_tensors(model: onnx.ModelProto) -> set[str]:
    return {node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"}


def test_a_disagreeing_group_stays_float_and_matches_float_better(caplog) -> None:
    model = concat_of_distant_ranges(1e4)
    split = _compile(model, BASE)
    with caplog.at_level(logging.WARNING, logger="qdqc"):
        kept = _compile(model, GROUP_FLOAT)
    assert {"a", "cat"} <= _quantized_tensors(split)  # the default splits the group: both quantized
    assert not {"a", "b", "cat"} & _quantized_tensors(kept)  # the whole group reads float
    decisions = layer_decisions(load_model(kept))
    assert not decisions["conv2"].int8 and not decisions["conv3"].int8
    assert "disagree=float" in decisions["conv3"].reason
    assert decisions["conv1"].int8  # conv4 is the head, float by default
    assert not [v for v in lint_model(load_model(kept)) if v.severity == "error"]
    assert _sqnr(model, kept) > _sqnr(model, split) + 3.0
    assert _sqnr(model, kept) > 30.0
    assert any("stays float" in r.getMessage() for r in caplog.records)


def test_a_concat_whose_inputs_only_it_reads_stays_float_when_they_disagree() -> None:
    model = _concat_read_only_by_itself(200.0)
    split, kept = _compile(model, BASE), _compile(model, GROUP_FLOAT)
    assert _quantized_tensors(split) & {"a", "b"} == set() and "cat" in _quantized_tensors(split)
    assert "cat" not in _quantized_tensors(kept)
    decisions = layer_decisions(load_model(kept))
    assert not decisions["conv3"].int8 and decisions["conv1"].int8 and decisions["conv2"].int8
    assert not [v for v in lint_model(load_model(kept)) if v.severity == "error"]
    assert _sqnr(model, kept) > _sqnr(model, split) + 6.0


def test_a_group_within_the_ratio_is_tied_as_before() -> None:
    model = concat_of_distant_ranges(4.0)
    kept = _compile(model, GROUP_FLOAT)
    assert {"a", "cat"} <= _quantized_tensors(kept)
    assert to_proto(load_model(kept)).graph == to_proto(load_model(_compile(model, BASE))).graph
    assert _sqnr(model, kept) > 25.0


def test_an_unknown_disagree_value_is_a_user_error() -> None:
    with pytest.raises(QdqcError, match="disagree"):
        _compile(concat_of_distant_ranges(4.0), BASE.replace("unify-scales", "unify-scales{disagree=x}"))

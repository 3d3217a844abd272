"""Fusion prediction runs on a copy of the IR, as rewrite patterns under the shared greedy driver."""

from __future__ import annotations

import gc

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.rewrite import driver
from qdq_compiler.targets import qdq_propagation
from qdq_compiler.targets.fusion import predict_fusions, report_to_json
from qdq_compiler.targets.qdq_propagation import MoveDqForward, MoveQBackward, propagate


def _pool_chain(pools: int, taken_name: str = "") -> onnx.ModelProto:
    """x -> Q -> DQ -> MaxPool x `pools` -> Q -> DQ -> Conv (int8 weight) -> y; optionally an Identity
    named `taken_name` on the output, to occupy a name the simulation would otherwise give a copy."""
    scale, zero = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")
    weight = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.int8), "w")
    w_scale = numpy_helper.from_array(np.full(2, 0.01, np.float32), "ws")
    w_zero = numpy_helper.from_array(np.zeros(2, np.int8), "wz")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="in_Q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["p0"], name="in_DQ"),
    ]
    for i in range(pools):
        nodes.append(
            helper.make_node("MaxPool", [f"p{i}"], [f"p{i + 1}"], name=f"pool{i}", kernel_shape=[1, 1])
        )
    nodes += [
        helper.make_node("QuantizeLinear", [f"p{pools}", "s", "z"], ["pq"], name="out_Q"),
        helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["pdq"], name="out_DQ"),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wdq"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["pdq", "wdq"], ["y"], name="conv"),
    ]
    if taken_name:
        nodes.append(helper.make_node("Identity", ["y"], ["y2"], name=taken_name))
    graph = helper.make_graph(
        nodes,
        "pools",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y2" if taken_name else "y", TensorProto.FLOAT, [1, 2, 4, 4])],
        [scale, zero, weight, w_scale, w_zero],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_prediction_leaves_the_input_model_byte_identical() -> None:
    model = load_model(_pool_chain(3))
    before = to_proto(model).SerializeToString()
    nodes_before = [(node.name, [v.name for v in node.inputs]) for node in model.graph]
    report = predict_fusions(model)
    assert len(report.moves) == 3  # the prediction did move Q/DQ (on its copy)
    assert to_proto(model).SerializeToString() == before
    assert [(node.name, [v.name for v in node.inputs]) for node in model.graph] == nodes_before


def test_prediction_runs_both_patterns_under_the_shared_driver(monkeypatch) -> None:
    calls: list[list[str]] = []
    real = driver.apply_patterns_greedily

    def recording(graph, patterns, **kwargs):
        calls.append([pattern.name for pattern in patterns])
        return real(graph, patterns, **kwargs)

    monkeypatch.setattr(qdq_propagation, "apply_patterns_greedily", recording)
    report = predict_fusions(load_model(_pool_chain(2)))
    # Round 1: DQ phase, Q phase (moves made); round 2: both again, nothing moves, done.
    assert calls == [["MoveDqForward"], ["MoveQBackward"]] * 2
    assert report.moves == [
        "DQ 'in_DQ' moved after MaxPool 'pool0'",
        "DQ 'in_DQ' moved after MaxPool 'pool1'",
    ]


def test_propagation_edits_the_copy_through_the_rewriter() -> None:
    model = load_model(_pool_chain(4))
    propagated = propagate(model.graph)
    assert propagated.graph is not model.graph
    assert all(node.graph is propagated.graph for node in propagated.graph)
    # One DQ move per MaxPool, each counted by the Rewriter; each copy moves on and the last one stays.
    assert propagated.rewriter.statistics["num-dq-moved"] == 4
    assert propagated.rewriter.statistics["num-q-moved"] == 0
    ops = [(node.op_type, node.name) for node in propagated.graph]
    assert ops[:7] == [
        ("QuantizeLinear", "in_Q"),
        *[("MaxPool", f"pool{i}") for i in range(4)],
        ("DequantizeLinear", "in_DQ_moved_3"),  # the 4th name the scope handed out for in_DQ's copies
        ("QuantizeLinear", "out_Q"),
    ]
    # Pool i reads the previous pool's output directly (INT8 in the engine), not a DQ.
    pools = [node for node in propagated.graph if node.op_type == "MaxPool"]
    assert [p.inputs[0].producer().op_type for p in pools] == ["QuantizeLinear"] + ["MaxPool"] * 3


def test_copies_are_named_by_the_rewriter_scope_without_clashes() -> None:
    model = load_model(_pool_chain(2, taken_name="in_DQ_moved"))
    propagated = propagate(model.graph)
    names = [node.name for node in propagated.graph]
    assert len(names) == len(set(names)), "a name the simulation handed out clashes"
    # "in_DQ_moved" is taken by the Identity: the copies get in_DQ_moved_1 (moved on, erased), then _2.
    assert [n for n in names if n.startswith("in_DQ_moved")] == ["in_DQ_moved_2", "in_DQ_moved"]
    values = [v.name for node in propagated.graph for v in node.outputs]
    assert len(values) == len(set(values))


def test_q_moves_back_depth_first_and_are_counted() -> None:
    """Without a DQ in front (the graph input is float), out_Q moves back across every pool."""
    proto = _pool_chain(3)
    del proto.graph.node[:2]  # in_Q, in_DQ
    proto.graph.node[0].input[0] = "x"
    propagated = propagate(load_model(proto).graph)
    assert propagated.rewriter.statistics["num-q-moved"] == 3
    assert propagated.facts.moves == [f"Q 'out_Q' moved before MaxPool 'pool{i}'" for i in (2, 1, 0)]
    first = next(iter(propagated.graph))
    assert (first.op_type, first.name, first.inputs[0].name) == ("QuantizeLinear", "out_Q_moved_2", "x")
    report = predict_fusions(load_model(proto))
    assert [(r.kind, r.node) for r in report.reformats] == [("Q", "out_Q")]  # it quantizes the graph input


def test_collector_state_is_restored() -> None:
    assert gc.isenabled()
    predict_fusions(load_model(_pool_chain(1)))
    assert gc.isenabled()
    gc.disable()
    try:
        predict_fusions(load_model(_pool_chain(1)))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_pattern_anchors() -> None:
    """MoveDqForward anchors on the ops of trt_rules' commuting table, MoveQBackward on activation Qs."""
    model = load_model(_pool_chain(1))
    working = qdq_propagation.working_copy(model.graph)
    copy, facts = working.graph, qdq_propagation.QdqFacts.of(working.originals)
    dq_anchors = [n.name for n in copy if MoveDqForward(facts).matches_anchor(n)]
    q_anchors = [n.name for n in copy if MoveQBackward(facts).matches_anchor(n)]
    assert (dq_anchors, q_anchors) == (["pool0"], ["in_Q", "out_Q"])
    assert report_to_json(predict_fusions(model))["cancelled_pairs"] == 1


def test_a_long_chain_of_int8_reshapes_is_int8_to_its_end() -> None:
    """A commuting op reading INT8 through any number of commuting ops is INT8 (the old simulation gave up
    after 64 ops and called the rest float)."""
    proto = _pool_chain(70)
    for node in proto.graph.node:
        if node.op_type == "MaxPool":
            node.op_type = "Identity"
            del node.attribute[:]
    report = predict_fusions(load_model(proto))
    assert len(report.moves) == 70
    assert report.int8_ops == [f"Identity 'pool{i}'" for i in range(70)]

"""What trt-int8 runs by default, and that each default measurably helps where it is on (issue 15, 5)."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pipelines import TRT_INT8
from qdq_compiler.pm import PassContext, PassManager

WITHOUT_EQUALIZE = TRT_INT8.replace("equalize,", "")


def _one_wide_channel_model() -> onnx.ModelProto:
    """x -> conv_a (channel 0 biased to ~60) -> Relu -> conv_b (reads channel 0 with tiny weights) -> Relu
    -> conv_c -> Relu -> conv_d -> y: one per-tensor scale for conv_b's input crushes its seven useful
    channels, unless cross-layer equalisation moves channel 0's range into conv_a's weights."""
    rng = np.random.default_rng(5)

    def weight(out_ch: int, in_ch: int, k: int) -> np.ndarray:
        return (rng.standard_normal((out_ch, in_ch, k, k)) * math.sqrt(2.0 / (in_ch * k * k))).astype(
            np.float32
        )

    w_a, b_a, w_b = weight(8, 4, 3), np.zeros(8, np.float32), weight(8, 8, 3)
    b_a[0] = 60.0
    w_b[:, 0] *= 1e-3
    inits = {"w_a": w_a, "b_a": b_a, "w_b": w_b, "w_c": weight(8, 8, 1), "w_d": weight(4, 8, 1)}
    nodes = [
        helper.make_node("Conv", ["x", "w_a", "b_a"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["a_act"], name="relu_a"),
        helper.make_node("Conv", ["a_act", "w_b"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["b_act"], name="relu_b"),
        helper.make_node("Conv", ["b_act", "w_c"], ["c"], name="conv_c"),
        helper.make_node("Relu", ["c"], ["c_act"], name="relu_c"),
        helper.make_node("Conv", ["c_act", "w_d"], ["y"], name="conv_d"),
    ]
    graph = helper.make_graph(
        nodes,
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(array, name) for name, array in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _sqnr(model: onnx.ModelProto, pipeline: str) -> float:
    samples = np.random.default_rng(1).standard_normal((16, 1, 4, 8, 8)).astype(np.float32)
    ir_model = load_model(model)
    PassManager(pipeline).run(ir_model, PassContext(calibration_data=samples))
    batches = [{"x": sample} for sample in np.random.default_rng(2).standard_normal((4, 1, 4, 8, 8))]
    batches = [{"x": batch["x"].astype(np.float32)} for batch in batches]
    return sqnr_db(run_outputs(model, batches)["y"], run_outputs(to_proto(ir_model), batches)["y"])


def test_trt_int8_equalizes_after_prepare_and_before_placement() -> None:
    steps = TRT_INT8.split(",")
    assert steps.index("prepare") < steps.index("equalize") < steps.index("place-qdq")
    assert "correct-bias" not in steps  # measured mixed on the bundled models: not a default


def test_the_default_equalization_lifts_a_layer_behind_one_wide_channel() -> None:
    model = _one_wide_channel_model()
    with_default, without = _sqnr(model, "trt-int8"), _sqnr(model, WITHOUT_EQUALIZE)
    assert with_default > without + 6.0, (with_default, without)

"""Issue 12, items 2a-2c: outputs that passed lint and were numerically wrong. Each test compares the compiled
model with the float model in onnxruntime.

- 2a: unify-scales tied a branch ~1e4 times smaller than its Concat partner to the Concat's scale (-> 0);
- 2b: trt-int8-from-qdq dropped the Relu / Relu6 that onnxruntime's quantize_static folded into a UINT8 Q;
- 2c: a layer kept float read the INT8-rounded weights of the INT8 layer it shares its weights with.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from helpers import concat_of_distant_ranges, graph_model
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy import run_outputs
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pipelines import TRT_INT8
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.quant.imported import implied_clamp
from qdq_compiler.targets import lint_model, predict_fusions

CHANNELS = 8
SIDE = 6


def _model(nodes, initializers, outputs, input_shape=(1, CHANNELS, SIDE, SIDE)) -> onnx.ModelProto:
    return graph_model(nodes, initializers, input_shape, outputs)


def _compile(model: onnx.ModelProto, pipeline: str = "trt-int8", data=None) -> onnx.ModelProto:
    ir_model = load_model(model)
    PassManager(pipeline).run(ir_model, PassContext(calibration_data=data))
    compiled = to_proto(ir_model)
    onnx.checker.check_model(compiled, full_check=True)
    return compiled


def _max_relative_error(reference: np.ndarray, actual: np.ndarray) -> float:
    scale = float(np.max(np.abs(reference)))
    return float(np.max(np.abs(actual.astype(np.float64) - reference)) / scale)


# ---------------------------------------------------------------------------------------------------------
# 2a: a scale group whose members' ranges differ by orders of magnitude
# ---------------------------------------------------------------------------------------------------------


def _positive_samples(count: int = 8, seed: int = 1) -> np.ndarray:
    """Calibration data as one array, samples stacked on axis 0."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, CHANNELS, SIDE, SIDE)).astype(np.float32)


def _errors(float_model: onnx.ModelProto, compiled: onnx.ModelProto, samples: np.ndarray) -> dict[str, float]:
    batches = [{"x": samples[i : i + 1]} for i in range(len(samples))]
    reference, actual = run_outputs(float_model, batches), run_outputs(compiled, batches)
    return {name: _max_relative_error(reference[name], actual[name]) for name in reference}


def _scale(model: onnx.ModelProto, quantize_input: str) -> float:
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    (node,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == quantize_input]
    return float(initializers[node.input[1]])


def test_2a_a_branch_far_below_its_concat_keeps_its_own_scale(caplog) -> None:
    """Before the fix: conv2 read Q(a) at the Concat's scale, i.e. all zeros (max relative error 1.0)."""
    model = concat_of_distant_ranges(1e4)
    samples = _positive_samples()
    with caplog.at_level(logging.WARNING, logger="qdqc"):
        compiled = _compile(model, data=samples)
    errors = _errors(model, compiled, _positive_samples(4, seed=11))
    assert errors["y"] < 0.05, errors
    assert _scale(compiled, "a") * 1000 < _scale(compiled, "cat")
    warnings = [r.getMessage() for r in caplog.records if "unify-scales" in r.getMessage()]
    assert len(warnings) == 1 and "'a'" in warnings[0] and "'cat'" in warnings[0], warnings


def test_2a_explain_reports_the_requantization_left_by_an_untied_member() -> None:
    model = concat_of_distant_ranges(1e4)
    compiled = _compile(model, data=_positive_samples())
    report = predict_fusions(load_model(compiled))
    found = [(r.dq, r.q) for r in report.requantizations]
    # The Concat reads `a` through its DQ (place-qdq rule 5, docs/placement.md), so the one requantization
    # sits where that DQ meets the Concat output's Q (moved onto the Concat's inputs): a_DQ -> cat_Q.
    assert found == [("a_DQ", "cat_Q")], report.requantizations
    assert not [v for v in lint_model(load_model(compiled)) if v.severity == "error"]


def test_2a_ranges_within_the_ratio_are_still_tied() -> None:
    model = concat_of_distant_ranges(4.0)
    samples = _positive_samples()
    compiled = _compile(model, data=samples)
    assert _scale(compiled, "a") == _scale(compiled, "cat")
    assert max(_errors(model, compiled, _positive_samples(4, seed=11)).values()) < 0.1


def test_2a_max_ratio_option_sets_the_limit() -> None:
    model = concat_of_distant_ranges(1e4)
    pipeline = TRT_INT8.replace("unify-scales", "unify-scales{max-ratio=1e6}")
    compiled = _compile(model, pipeline, data=_positive_samples())
    assert _scale(compiled, "a") == _scale(compiled, "cat")  # the user asked to tie whatever the cost


# ---------------------------------------------------------------------------------------------------------
# 2b: onnxruntime's quantize_static (asymmetric activations) folds Relu / Clip into the Q's zero-point
# ---------------------------------------------------------------------------------------------------------


CLIP_BOUNDS = {"clip6": (0.0, 6.0), "clip11": (-1.0, 1.0)}


def _conv_activation_conv(activation: str) -> onnx.ModelProto:
    """x -> conv1 (bias) -> Relu, Clip(0, 6) or Clip(-1, 1) -> conv2 -> conv3 -> y (conv3 the float head)."""
    rng = np.random.default_rng(0)
    initializers = {
        "w1": rng.normal(0.0, 0.5, (CHANNELS, CHANNELS, 3, 3)),
        "b1": rng.normal(0.0, 0.5, CHANNELS),
        "w2": rng.normal(0.0, 0.2, (CHANNELS, CHANNELS, 3, 3)),
        "w3": rng.normal(0.0, 0.5, (2, CHANNELS, 1, 1)),
        "low": np.array(CLIP_BOUNDS.get(activation, (0.0, 0.0))[0]),
        "high": np.array(CLIP_BOUNDS.get(activation, (0.0, 0.0))[1]),
    }
    act = (
        helper.make_node("Relu", ["t"], ["r"], name="act")
        if activation == "relu"
        else helper.make_node("Clip", ["t", "low", "high"], ["r"], name="act")
    )
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["t"], name="conv1", pads=[1, 1, 1, 1]),
        act,
        helper.make_node("Conv", ["r", "w2"], ["u"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["u", "w3"], ["y"], name="conv3"),
    ]
    if activation == "relu":
        del initializers["low"], initializers["high"]
    weights = {k: v.astype(np.float32) for k, v in initializers.items()}
    return _model(nodes, weights, {"y": (1, 2, SIDE, SIDE)})


def _signed_samples(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 3.0, (count, CHANNELS, SIDE, SIDE)).astype(np.float32)


def _ort_quantized_defaults(float_model: onnx.ModelProto, tmp_path, uint8: bool = False) -> onnx.ModelProto:
    """quantize_static with its defaults (QDQ format, asymmetric activations, per-tensor weights); its
    default activation type is INT8 (zero-point -128 for a range starting at 0), older releases' UINT8."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    float_path, qdq_path = tmp_path / "float.onnx", tmp_path / "ort_qdq.onnx"
    onnx.save(float_model, float_path)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(_signed_samples(8, seed=1))

        def get_next(self):
            sample = next(self.samples, None)
            return None if sample is None else {"x": sample[None]}

    types = {"activation_type": QuantType.QUInt8} if uint8 else {}
    quantize_static(
        str(float_path), str(qdq_path), Reader(), extra_options={"ActivationSymmetric": False}, **types
    )
    return onnx.load(qdq_path)


@pytest.mark.parametrize("uint8", [False, True], ids=["int8", "uint8"])
@pytest.mark.parametrize("activation", ["relu", "clip6", "clip11"])
def test_2b_a_relu_or_clip_folded_into_an_asymmetric_pair_comes_back(tmp_path, activation, uint8) -> None:
    """Before the fix: strip-qdq dropped the pair and with it the clamp; conv2 read negative values."""
    float_model = _conv_activation_conv(activation)
    ort_model = _ort_quantized_defaults(float_model, tmp_path, uint8)
    assert "Relu" not in {n.op_type for n in ort_model.graph.node}  # onnxruntime folded it
    assert "Clip" not in {n.op_type for n in ort_model.graph.node}
    compiled = _compile(ort_model, "trt-int8-from-qdq")
    samples = _signed_samples(4, seed=7)
    batches = [{"x": samples[i : i + 1]} for i in range(len(samples))]
    reference, actual = run_outputs(float_model, batches)["y"], run_outputs(compiled, batches)["y"]
    assert _max_relative_error(reference, actual) < 0.1
    # the activation's output, seen by cutting the compiled model at the tensor the float model names "r"
    (restored,) = [n for n in compiled.graph.node if "r" in n.output]
    assert restored.op_type == ("Relu" if activation == "relu" else "Clip")
    activation_out = _intermediate(compiled, "r", batches)
    bottom, top = CLIP_BOUNDS.get(activation, (0.0, np.inf))
    assert activation_out.min() >= bottom and activation_out.max() <= top
    assert not [v for v in lint_model(load_model(compiled)) if v.severity == "error"]


def _intermediate(model: onnx.ModelProto, name: str, batches) -> np.ndarray:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return run_outputs(probe, batches)[name]


def test_2b_implied_clamp_by_hand() -> None:
    assert implied_clamp(np.float32(0.1), np.uint8(0), np.dtype(np.uint8)) == (0.0, None)  # Relu, top 25.5
    assert implied_clamp(np.float32(6 / 255), np.int8(-128), np.dtype(np.int8)) == (0.0, 6.0)  # Relu6
    assert implied_clamp(np.float32(6 / 255), np.uint8(0), np.dtype(np.uint8)) == (0.0, 6.0)
    assert implied_clamp(np.float32(0.1), np.uint8(1), np.dtype(np.uint8)) is None  # range starts at -0.1
    assert implied_clamp(np.float32(0.1), np.int8(0), np.dtype(np.int8)) is None  # symmetric
    assert implied_clamp(np.float32(2 / 255), np.int8(0), np.dtype(np.int8)) == (-1.0, 1.0)  # Clip(-1, 1)
    assert implied_clamp(np.float32(2 / 255), np.uint8(128), np.dtype(np.uint8)) == (-1.0, 1.0)
    assert implied_clamp(np.float32(2.1 / 255), np.int8(0), np.dtype(np.int8)) is None  # ends -1.05, 1.04
    assert implied_clamp(np.float32(1.3 / 255), np.int8(-69), np.dtype(np.int8)) == (None, 1.0)  # top only
    assert implied_clamp(np.float32(1 / 255), np.int8(127), np.dtype(np.int8)) == (-1.0, None)  # bottom only
    assert implied_clamp(np.float16(2 / 255), np.int8(0), np.dtype(np.int8)) == (-1.0, 1.0)  # float16 scale
    assert implied_clamp(np.float32(0.1), None, np.dtype(np.uint8)) == (0.0, None)  # default zero-point
    assert implied_clamp(np.array([0.1, 0.2], np.float32), np.zeros(2, np.uint8), np.dtype(np.uint8)) is None


def test_2b_no_clamp_where_the_tensor_cannot_be_negative() -> None:
    """Pairs starting at 0 on a graph input, a Relu output and a Sigmoid output clamp nothing: no new op."""
    rng = np.random.default_rng(3)
    shape = (CHANNELS, CHANNELS, 1, 1)
    weights = {f"w{i}": rng.normal(0.0, 0.5, shape).astype(np.float32) for i in (1, 2, 3)}
    parameters = {"s": np.float32(0.05), "z": np.uint8(0)}

    def graph(pair) -> list[onnx.NodeProto]:
        return [
            *pair("x"),
            helper.make_node("Conv", [f"x{pair.suffix}", "w1"], ["t"], name="conv1"),
            helper.make_node("Relu", ["t"], ["r"], name="relu"),
            *pair("r"),
            helper.make_node("Conv", [f"r{pair.suffix}", "w2"], ["u"], name="conv2"),
            helper.make_node("Sigmoid", ["u"], ["g"], name="sigmoid"),
            *pair("g"),
            helper.make_node("Conv", [f"g{pair.suffix}", "w3"], ["y"], name="conv3"),
        ]

    def qdq(name: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node("QuantizeLinear", [name, "s", "z"], [f"{name}_q"], name=f"{name}_Q"),
            helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [f"{name}_dq"], name=f"{name}_DQ"),
        ]

    def none(name: str) -> list[onnx.NodeProto]:
        return []

    qdq.suffix, none.suffix = "_dq", ""
    outputs = {"y": (1, CHANNELS, SIDE, SIDE)}
    float_model = _model(graph(none), weights, outputs)
    stripped = _compile(_model(graph(qdq), {**weights, **parameters}, outputs), "strip-qdq")
    assert [n.op_type for n in stripped.graph.node] == ["Conv", "Relu", "Conv", "Sigmoid", "Conv"]
    batches = [{"x": _signed_samples(1, seed=5)}]
    assert np.array_equal(run_outputs(float_model, batches)["y"], run_outputs(stripped, batches)["y"])


# ---------------------------------------------------------------------------------------------------------
# 2c: a layer kept float that shares its weight initializer with an INT8 layer
# ---------------------------------------------------------------------------------------------------------


def _shared_weight_model() -> onnx.ModelProto:
    """x -> conv_a(W) -> conv_b -> y_int8 path; x -> conv_head(W) -> y_head (a head layer: stays float);
    x -> conv_side(W) -> conv_c -> y_side (excluded by name in one variant)."""
    rng = np.random.default_rng(4)
    weights = {
        "w": rng.normal(0.0, 0.5, (CHANNELS, CHANNELS, 3, 3)),
        "v": rng.normal(0.0, 0.5, (CHANNELS, CHANNELS, 1, 1)),
        "u": rng.normal(0.0, 0.5, (CHANNELS, CHANNELS, 1, 1)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "v"], ["y_int8"], name="conv_b"),
        helper.make_node("Conv", ["x", "w"], ["y_head"], name="conv_head", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w"], ["s"], name="conv_side", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["s", "u"], ["y_side"], name="conv_c"),
    ]
    shape = (1, CHANNELS, SIDE, SIDE)
    outputs = {"y_int8": shape, "y_head": shape, "y_side": shape}
    return _model(nodes, {k: v.astype(np.float32) for k, v in weights.items()}, outputs)


def test_2c_float_layers_sharing_an_int8_layers_weight_read_the_float_weight() -> None:
    """Before the fix: conv_head (head) and conv_side (excluded) read DQ(INT8 W) while reported float."""
    model = _shared_weight_model()
    samples = _signed_samples(8, seed=2)
    # Without equalize: it rescales conv_side -> conv_c's float weights (the same function, but the last bit
    # of y_side rounds differently), and this test compares bit for bit.
    pipeline = TRT_INT8.replace("equalize,", "").replace("place-qdq", "place-qdq{exclude=[conv_side]}")
    ir_model = load_model(model)
    results = PassManager(pipeline).run(ir_model, PassContext(calibration_data=samples))
    compiled = to_proto(ir_model)
    placed = next(r for r in results if "num-layers-int8" in r.statistics).statistics
    assert (placed["num-layers-int8"], placed["num-layers-float"]) == (1, 4)  # conv_a; the rest float
    batches = [{"x": samples[i : i + 1]} for i in range(2)]
    reference, actual = run_outputs(model, batches), run_outputs(compiled, batches)
    # conv_head reads float x and float W: bit-identical to the float model (same onnxruntime kernel)
    assert np.array_equal(reference["y_head"], actual["y_head"])
    # conv_side is excluded and conv_c a head: the whole path is float, so identical as well
    assert np.array_equal(reference["y_side"], actual["y_side"])
    assert 0 < _max_relative_error(reference["y_int8"], actual["y_int8"]) < 0.05  # the INT8 path is INT8
    readers = {n.name: n.input[1] for n in compiled.graph.node if n.op_type == "Conv"}
    initializers = {i.name: i for i in compiled.graph.initializer}
    assert initializers[readers["conv_head"]].data_type == TensorProto.FLOAT
    assert readers["conv_head"] == readers["conv_side"] != readers["conv_a"]


# ---------------------------------------------------------------------------------------------------------
# 2a, second form (found by the 30-minute fuzz run): the Concat output itself is quantized, so one scale
# covers a branch 10**4 times smaller; no tying is involved and no scale choice saves the branch
# ---------------------------------------------------------------------------------------------------------


def _quantized_concat_of_distant_ranges() -> onnx.ModelProto:
    """x -> conv1 (gain ~1e-4) -> a, x -> conv2 -> b; Concat(a, b) -> conv3 -> conv4 -> y, where conv3 reads
    ``a`` with weights 1e4 larger, so both branches matter equally in y."""
    rng = np.random.default_rng(5)
    weights = {
        "w1": rng.uniform(-1.0, 1.0, (CHANNELS, CHANNELS, 1, 1)) * 1e-4,
        "w2": rng.uniform(-1.0, 1.0, (CHANNELS, CHANNELS, 1, 1)),
        "w3": np.concatenate(
            [
                rng.uniform(-1.0, 1.0, (CHANNELS, CHANNELS, 1, 1)) * 1e4,
                rng.uniform(-1.0, 1.0, (CHANNELS, CHANNELS, 1, 1)),
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
    return _model(nodes, {k: v.astype(np.float32) for k, v in weights.items()}, {"y": shape})


def test_2a_a_quantized_concat_output_that_drowns_an_input_is_named(caplog) -> None:
    """Before: no word, y off by ~50%. Now a warning names the Concat output, the drowned input and the layer
    to keep float; keeping it float (--exclude) recovers y. The default pipeline's equalize-channels brings
    the members together first (they come from convs), so the warning is checked without it, and the
    default is checked to recover y (within 10%) with every layer INT8."""
    model = _quantized_concat_of_distant_ranges()
    without = TRT_INT8.replace("equalize-channels,", "")
    with caplog.at_level(logging.WARNING, logger="qdqc"):
        equalized = _compile(model, data=_positive_samples())
    assert _errors(model, equalized, _positive_samples(4, seed=11))["y"] < 0.1  # drowned: > 0.2
    assert not [r for r in caplog.records if "Concat output" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="qdqc"):
        compiled = _compile(model, without, data=_positive_samples())
    assert _errors(model, compiled, _positive_samples(4, seed=11))["y"] > 0.2  # the branch is gone
    warnings = [r.getMessage() for r in caplog.records if "Concat output" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "'cat'" in warnings[0] and "'a'" in warnings[0] and "'conv3'" in warnings[0]
    caplog.clear()
    kept = without.replace("place-qdq", "place-qdq{exclude=conv3}")
    with caplog.at_level(logging.WARNING, logger="qdqc"):
        recovered = _compile(model, kept, data=_positive_samples())
    assert _errors(model, recovered, _positive_samples(4, seed=11))["y"] < 0.05
    assert not [r for r in caplog.records if "Concat output" in r.getMessage()]

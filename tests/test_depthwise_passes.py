"""The passes for depthwise backbones, checked with numbers against the float model.

equalize (cross-layer equalisation): the float function is unchanged, channel ranges are shared evenly, and
INT8 of a depthwise block with badly spread channels gets more accurate. correct-bias: every conv output's
per-channel mean matches the float model's, which lifts INT8 accuracy behind a global pool."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.cli import main
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.pm.registry import load_passes
from qdq_compiler.quant.conv_channels import input_channel_ranges

load_passes()


def _conv(name: str, src: str, dst: str, weight: np.ndarray, group: int = 1) -> tuple[onnx.NodeProto, list]:
    k = weight.shape[-1]
    inits = [numpy_helper.from_array(weight.astype(np.float32), f"{name}.w")]
    bias = np.linspace(-0.5, 0.5, weight.shape[0]).astype(np.float32)
    inits.append(numpy_helper.from_array(bias, f"{name}.b"))
    node = helper.make_node(
        "Conv", [src, f"{name}.w", f"{name}.b"], [dst], name=name, group=group, pads=[k // 2] * 4
    )
    return node, inits


def depthwise_block(activation: str = "Relu", seed: int = 0, pooled: bool = False) -> onnx.ModelProto:
    """conv 3->8 -> act -> depthwise 3x3 -> act -> conv 8->4; the first conv's channels spread 1e-2..1e2."""
    rng = np.random.default_rng(seed)
    spread = 10.0 ** rng.uniform(-2, 2, size=8)
    w1 = rng.standard_normal((8, 3, 3, 3)) * spread.reshape(-1, 1, 1, 1)
    w2 = rng.standard_normal((8, 1, 3, 3))
    w3 = rng.standard_normal((4, 8, 1, 1))
    nodes, inits = [], []
    last = "t3" if pooled else "y"
    for name, src, dst, w, g in (
        ("c1", "x", "t1", w1, 1),
        ("dw", "a1", "t2", w2, 8),
        ("c3", "a2", last, w3, 1),
    ):
        node, more = _conv(name, src, dst, w, g)
        nodes.append(node)
        inits += more
    acts = []
    for src, dst in (("t1", "a1"), ("t2", "a2")):
        if activation == "Relu6":
            acts.append(helper.make_node("Clip", [src, "zero", "six"], [dst], name=f"act_{dst}"))
        elif activation == "PReLU":
            acts.append(helper.make_node("PRelu", [src, "slope"], [dst], name=f"act_{dst}"))
        else:
            acts.append(helper.make_node(activation, [src], [dst], name=f"act_{dst}"))
    inits += [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
        numpy_helper.from_array(np.full((8, 1, 1), 0.1, np.float32), "slope"),
    ]
    ordered = [nodes[0], acts[0], nodes[1], acts[1], nodes[2]]
    if pooled:  # a global pool averages the quantization noise away but keeps any shift of the mean
        ordered.append(helper.make_node("GlobalAveragePool", ["t3"], ["y"], name="pool"))
    graph = helper.make_graph(
        ordered,
        "dw_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1] if pooled else [1, 4, 16, 16])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _equalize(proto: onnx.ModelProto) -> onnx.ModelProto:
    model = load_model(proto)
    PassManager("equalize").run(model, PassContext())
    return to_proto(model)


def _batches(seed: int = 1, count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(count)]


def _weight(proto: onnx.ModelProto, conv: str, index: int = 1) -> np.ndarray:
    node = next(n for n in proto.graph.node if n.name == conv)
    init = next(i for i in proto.graph.initializer if i.name == node.input[index])
    return numpy_helper.to_array(init).astype(np.float64)


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu", "PReLU"])
def test_equalize_keeps_the_float_function(activation):
    source = depthwise_block(activation)
    equalized = _equalize(source)
    before, after = run_outputs(source, _batches()), run_outputs(equalized, _batches())
    assert sqnr_db(before["y"], after["y"]) > 100  # float rounding only
    assert not np.allclose(_weight(source, "c1"), _weight(equalized, "c1"))  # something was rescaled


def test_equalize_shares_each_channel_range_evenly_between_the_two_convs():
    source = depthwise_block()
    equalized = _equalize(source)
    w1, w2 = _weight(equalized, "c1"), _weight(equalized, "dw")
    r1 = np.abs(w1).reshape(8, -1).max(axis=1)
    r2 = input_channel_ranges(w2, group=8)
    # c1/dw is not the last pair: dw/c3 rescales dw again, so the pair is equal up to the sweeps' tolerance
    np.testing.assert_allclose(r1, r2, rtol=0.05)
    spread_before = np.ptp(np.log10(np.abs(_weight(source, "c1")).reshape(8, -1).max(axis=1)))
    spread_after = np.ptp(np.log10(r1))
    assert spread_after < spread_before / 2


def test_input_channel_ranges_of_a_grouped_conv_by_hand():
    weight = np.zeros((4, 2, 1, 1))  # group 2: outputs 0-1 read inputs 0-1, outputs 2-3 read inputs 2-3
    weight[0, 0], weight[1, 0], weight[1, 1] = 3.0, -5.0, 2.0
    weight[2, 1], weight[3, 0] = 7.0, -1.0
    np.testing.assert_array_equal(input_channel_ranges(weight, group=2), [5.0, 2.0, 1.0, 7.0])


def test_relu6_pairs_are_left_alone():
    source = depthwise_block("Relu6")
    equalized = _equalize(source)
    np.testing.assert_array_equal(_weight(source, "c1"), _weight(equalized, "c1"))
    np.testing.assert_array_equal(_weight(source, "dw"), _weight(equalized, "dw"))


def test_a_conv_output_read_twice_is_not_equalized():
    source = depthwise_block()
    source.graph.output.append(helper.make_tensor_value_info("a1", TensorProto.FLOAT, [1, 8, 16, 16]))
    equalized = _equalize(source)
    np.testing.assert_array_equal(_weight(source, "c1"), _weight(equalized, "c1"))
    assert not np.array_equal(_weight(source, "c3"), _weight(equalized, "c3"))  # dw/c3 still is


def test_bad_iterations_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(depthwise_block(), path)
    code = main(
        ["compile", str(path), "--pipeline", "equalize{iterations=0}", "-o", str(tmp_path / "o.onnx")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == "qdqc: error: pass 'equalize': iterations must be at least 1, got 0"


def test_equalize_lifts_int8_accuracy_of_a_badly_spread_depthwise_block(tmp_path):
    source = tmp_path / "block.onnx"
    onnx.save(depthwise_block(), source)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(2).standard_normal((16, 3, 16, 16)).astype(np.float32))
    steps = "place-qdq,calibrate{method=max},unify-scales,fold-scales,cleanup-qdq,legalize-trt,verify-trt"
    results = {}
    for label, pipeline in (("plain", f"prepare,{steps}"), ("equalized", f"prepare,equalize,{steps}")):
        out = tmp_path / f"{label}.onnx"
        args = ["-q", "compile", str(source), "--calib", str(calib), "--quantize-head", "--no-check"]
        assert main([*args, "--pipeline", pipeline, "-o", str(out)]) == 0
        reference = run_outputs(onnx.load(source), _batches(seed=3))
        results[label] = sqnr_db(reference["y"], run_outputs(onnx.load(out), _batches(seed=3))["y"])
    assert results["equalized"] > results["plain"] + 3.0, results


# correct-bias: the empirical bias correction that pairs with equalisation on depthwise blocks

STEPS_AFTER_CALIBRATE = "unify-scales,fold-scales,cleanup-qdq,legalize-trt,verify-trt"


def _compile_sqnr(tmp_path, source_proto: onnx.ModelProto, pipeline: str, label: str) -> float:
    source, calib, out = tmp_path / "src.onnx", tmp_path / "calib.npy", tmp_path / f"{label}.onnx"
    onnx.save(source_proto, source)
    np.save(calib, np.random.default_rng(2).standard_normal((16, 3, 16, 16)).astype(np.float32))
    args = ["-q", "compile", str(source), "--calib", str(calib), "--quantize-head", "--no-check"]
    assert main([*args, "--pipeline", pipeline, "-o", str(out)]) == 0
    reference = run_outputs(source_proto, _batches(seed=3, count=8))
    return sqnr_db(reference["y"], run_outputs(onnx.load(out), _batches(seed=3, count=8))["y"])


def test_correct_bias_lifts_int8_accuracy_behind_a_global_pool(tmp_path):
    """The pool averages the rounding noise away but keeps the mean's shift: the correction removes it
    (measured 34.1 -> 40.9 dB; with equalize first 44.5 -> 45.6 dB)."""
    calibrate = "place-qdq,calibrate{method=mse}"
    model = depthwise_block(pooled=True)
    plain = _compile_sqnr(tmp_path, model, f"prepare,{calibrate},{STEPS_AFTER_CALIBRATE}", "plain")
    with_correction = f"prepare,{calibrate},correct-bias,{STEPS_AFTER_CALIBRATE}"
    corrected = _compile_sqnr(tmp_path, model, with_correction, "corrected")
    assert corrected > plain + 3.0, (plain, corrected)


def test_correct_bias_gives_the_first_conv_its_float_twins_mean(tmp_path):
    """The first conv reads the quantized graph input, which no correction changes: after correct-bias its
    per-channel output mean equals its float twin's before (the same conv on the float input and weight)."""
    from qdq_compiler.calib.channel_means import channel_means
    from qdq_compiler.passes.correct_bias import with_reference_convs

    proto = depthwise_block()
    calib = np.random.default_rng(2).standard_normal((16, 3, 16, 16)).astype(np.float32)
    batches = [{"x": calib[i : i + 1]} for i in range(16)]

    def means(pipeline: str) -> tuple[np.ndarray, np.ndarray]:
        model = load_model(proto)
        PassManager(pipeline).run(model, PassContext(calibration_data=calib))
        measured, twins = with_reference_convs(to_proto(model), ["t1"])
        found = channel_means(measured, ["t1", *twins], batches)
        return found["t1"], found[twins[0]]

    calibrated = "prepare,place-qdq,calibrate{method=percentile{p=99}}"
    before, twin_before = means(calibrated)
    after, _ = means(f"{calibrated},correct-bias")
    shift_before = np.abs(before - twin_before).max()
    assert shift_before > 1e-3  # there was a shift to correct
    assert np.abs(after - twin_before).max() < shift_before / 100


def test_correct_bias_before_calibrate_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(depthwise_block(), path)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.zeros((2, 3, 16, 16), np.float32))
    pipeline = "prepare,place-qdq,correct-bias,calibrate"
    code = main(
        ["compile", str(path), "--calib", str(calib), "--pipeline", pipeline, "-o", str(tmp_path / "o.onnx")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("qdqc: error: ") and "put it after calibrate or import-scales" in err
    assert "\n" not in err


def test_equalize_makes_one_initializer_per_rescaled_input_whatever_the_sweeps(monkeypatch):
    """Sweeps rescale arrays; the graph gets each rescaled weight/bias once (not once per sweep): a chain
    of 10k pairs built eight times as many initializers as it kept."""
    from qdq_compiler.rewrite.rewriter import Rewriter

    made = []
    original = Rewriter.add_constant
    monkeypatch.setattr(
        Rewriter, "add_constant", lambda self, *a, **k: made.append(1) or original(self, *a, **k)
    )
    source = depthwise_block("Relu")
    model = load_model(source)
    result = PassManager("equalize{iterations=8,tolerance=0}").run(model, PassContext())
    equalized = to_proto(model)
    assert result is not None
    rescaled = {i.name for i in equalized.graph.initializer if "_equalized" in i.name}
    assert 0 < len(made) == len(rescaled)  # every sweep ran (tolerance 0), each input written once
    before, after = run_outputs(source, _batches()), run_outputs(equalized, _batches())
    assert sqnr_db(before["y"], after["y"]) > 100

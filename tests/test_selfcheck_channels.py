"""The self-check's per-channel part: dead and very noisy channels that an output-wide SQNR hides (a small
Concat branch rounded to zero by the Concat's one scale, issue 12 item 2a; one broken channel)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from helpers import run_onnx
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy import sqnr_db
from qdq_compiler.accuracy.channels import channel_axes, check_channels
from qdq_compiler.cli import main
from qdq_compiler.pipelines import TRT_INT8
from qdq_compiler.pm import Pass, PassResult, register_pass

# unify-scales ties every member of a scale group, however far apart (the behaviour before the fix of 2a).
TIE_ALWAYS = TRT_INT8.replace("unify-scales", "unify-scales{max-ratio=1e9}")


@register_pass
class ScaleOneChannel(Pass):
    """Breaks one output channel of a Conv on purpose: its weight scale times ``factor``."""

    name = "test-scale-one-channel"
    summary = "Multiplies one channel of a Conv's per-channel weight scale (self-check tests)."

    @dataclass(frozen=True)
    class Options:
        node: str = ""
        channel: int = 0
        factor: float = 1.0

    def run(self, model: ir.Model, ctx) -> PassResult:
        conv = next(node for node in model.graph if node.name == self.options.node)
        scale = conv.inputs[1].producer().inputs[1]
        values = scale.const_value.numpy().copy()
        values[self.options.channel] *= np.float32(self.options.factor)
        scale.const_value = ir.tensor(values)
        return PassResult(modified=True)


def _concat_of_distant_ranges(ratio: float = 1e4) -> onnx.ModelProto:
    """Issue 12 item 2a: conv_small and conv_big (all-positive weights, conv_big ``ratio`` times larger, fed
    by conv_small) join in one Concat -> MaxPool -> y [n, 16, 4, 4]; y -> conv_tail -> z. Channels 0-7 of y
    are the small branch. Compiled with conv_big kept float, the MaxPool's input (the Concat's output) is
    quantized with one scale, the big branch's, which rounds the small branch to 0."""
    rng = np.random.default_rng(7)
    weights = {
        "w_small": rng.uniform(0.01, 0.1, (8, 4, 3, 3)),
        "w_big": rng.uniform(0.01, 0.1, (8, 8, 3, 3)) * ratio,
        "w_tail": rng.uniform(-0.1, 0.1, (4, 16, 1, 1)),
    }
    inits = [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w_small"], ["s"], name="conv_small", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["s", "w_big"], ["b"], name="conv_big", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["s", "b"], ["cat"], name="concat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["y", "w_tail"], ["z"], name="conv_tail"),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 4, 4]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4, 4, 4]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])]
    graph = helper.make_graph(nodes, "concat_of_distant_ranges", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _wide_conv() -> onnx.ModelProto:
    """x -> conv (4 -> 64 channels) -> relu -> y: one broken channel of 64 leaves the output above 10 dB."""
    rng = np.random.default_rng(9)
    weight = numpy_helper.from_array((rng.standard_normal((64, 4, 3, 3)) * 0.3).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64, 8, 8])]
    graph = helper.make_graph(nodes, "wide", inputs, outputs, [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _compile(tmp_path, model: onnx.ModelProto, samples: np.ndarray, *extra: str) -> tuple[int, dict]:
    source, data, out, summary = (tmp_path / name for name in ("m.onnx", "m.npy", "m.int8.onnx", "s.json"))
    onnx.save(model, source)
    np.save(data, samples)
    code = main(
        ["compile", str(source), "-o", str(out), "--calib", str(data), "--summary-json", str(summary), *extra]
    )
    return code, json.loads(summary.read_text())["self_check"] if summary.exists() else {}


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("qdqc: WARNING: self-check")]


def _outputs(check: dict) -> dict[str, dict]:
    return {out["name"]: out for out in check["outputs"]}


@pytest.mark.parametrize("pipeline", [TIE_ALWAYS, "trt-int8"])
def test_a_small_concat_branch_zeroed_by_the_shared_scale_is_named(tmp_path, capsys, pipeline):
    """With every member tied (as before 2a's fix), and by default too: conv_small's output has no quantizer
    of its own to untie, the Concat's output is quantized once for both branches."""
    samples = np.random.default_rng(8).uniform(0, 1, (8, 4, 8, 8)).astype(np.float32)
    options = ("--pipeline", pipeline, "--quantize-head", "--exclude", "conv_big")
    code, check = _compile(tmp_path, _concat_of_distant_ranges(), samples, *options)
    captured = capsys.readouterr()
    assert code == 0
    # the blind spot: y as a whole is far above the threshold although half its channels are gone
    compiled = run_onnx(onnx.load(str(tmp_path / "m.int8.onnx")), {"x": samples[:4]})[0]
    reference = run_onnx(_concat_of_distant_ranges(), {"x": samples[:4]})[0]
    assert sqnr_db(reference.astype(np.float64), compiled) > 40.0
    assert not compiled[:, :8].any() and reference[:, :8].min() > 0.0
    y_sqnr = _outputs(check)["y"]["sqnr_db"]
    assert _warnings(captured.err) == [
        "qdqc: WARNING: self-check: output 'y' has 8 of 16 channels along axis 1 constant or zero while the "
        f"float model's vary: 0, 1, 2, 3, 4, 5, 6, 7 (the output's SQNR {y_sqnr:.2f} dB hides them)"
    ], captured.err
    assert re.search(r"y \d+\.\d+ dB \[8 dead on axis 1\]", captured.out), captured.out
    assert check["status"] == "warning"
    by_axis = {channel["axis"]: channel for channel in _outputs(check)["y"]["channels"]}
    assert by_axis[1]["dead"] == {"count": 8, "first": list(range(8))} and by_axis[1]["size"] == 16
    assert by_axis[1]["worst"] == {"index": by_axis[1]["worst"]["index"], "sqnr_db": 0.0}
    assert by_axis[3]["dead"]["count"] == 0 and by_axis[3]["low_sqnr"]["count"] == 0


def test_branches_of_alike_ranges_give_no_channel_warning(tmp_path, capsys):
    """The same model with both branches in one range: nothing is rounded away, and nothing warns."""
    samples = np.random.default_rng(8).uniform(0, 1, (8, 4, 8, 8)).astype(np.float32)
    code, check = _compile(
        tmp_path,
        _concat_of_distant_ranges(ratio=1.0),
        samples,
        "--pipeline",
        TIE_ALWAYS,
        "--quantize-head",
        "--exclude",
        "conv_big",
    )
    assert code == 0 and not _warnings(capsys.readouterr().err) and check["status"] == "ok"
    assert all(channel["dead"]["count"] == 0 for out in check["outputs"] for channel in out["channels"])


@pytest.mark.parametrize("factor, kind", [("0", "dead"), ("-1", "low")])
def test_one_sabotaged_channel_is_found(tmp_path, capsys, factor, kind):
    samples = np.random.default_rng(10).standard_normal((8, 4, 8, 8)).astype(np.float32)
    pipeline = f"trt-int8,test-scale-one-channel{{node=conv,channel=37,factor={factor}}}"
    code, check = _compile(tmp_path, _wide_conv(), samples, "--quantize-head", "--pipeline", pipeline)
    captured = capsys.readouterr()
    assert code == 0
    output = _outputs(check)["y"]
    assert output["problem"] is None and output["sqnr_db"] > 10.0  # the output as a whole passes
    channels = {channel["axis"]: channel for channel in output["channels"]}
    assert channels[1]["worst"]["index"] == 37
    (warning,) = _warnings(captured.err)
    if kind == "dead":
        assert channels[1]["dead"] == {"count": 1, "first": [37]} and channels[1]["low_sqnr"]["count"] == 0
        assert "1 of 64 channels along axis 1 constant or zero while the float model's vary: 37 (" in warning
    else:  # relu(-x) for relu(x): the error is larger than the signal
        assert channels[1]["low_sqnr"] == {"count": 1, "first": [37]} and channels[1]["dead"]["count"] == 0
        sqnr = channels[1]["worst"]["sqnr_db"]
        assert sqnr < 0.0
        assert f"has 1 of 64 channels along axis 1 with SQNR below 0 dB: 37 ({sqnr:.2f} dB)" in warning
    assert channels[3]["dead"]["count"] == 0 and channels[3]["low_sqnr"]["count"] == 0  # no column broke


def test_the_bundled_detector_gives_no_channel_warning(tmp_path, capsys):
    from qdq_compiler.detect import bundled

    summary = tmp_path / "s.json"
    args = [
        "compile",
        str(bundled.model_path()),
        "--calib",
        str(bundled.calib_dir()),
        "-o",
        str(tmp_path / "d.onnx"),
        "--summary-json",
        str(summary),
    ]
    assert main(args) == 0
    assert not _warnings(capsys.readouterr().err)
    (output,) = json.loads(summary.read_text())["self_check"]["outputs"]
    channels = {channel["axis"]: channel for channel in output["channels"]}
    assert set(channels) == {1, 2}  # [N, anchors, attributes]: anchors and attributes
    for channel in channels.values():  # the worst anchor 23 dB, the worst attribute 17 dB (measured)
        assert channel["dead"]["count"] == 0 and channel["worst"]["sqnr_db"] > 10.0


# ------------------------------------------------------------------------ the check on arrays
def test_channel_axes_are_axis_1_and_the_last():
    assert [channel_axes(rank) for rank in (1, 2, 3, 4)] == [(), (1,), (1, 2), (1, 3)]


def test_check_channels_finds_dead_low_and_skips_negligible_channels():
    rng = np.random.default_rng(0)
    reference = rng.uniform(1.0, 2.0, (2, 6, 5))
    reference[:, 5] *= 1e-8  # negligible next to the rest: not judged
    compiled = reference + rng.normal(0, 0.01, reference.shape)
    compiled[:, 0] = 0.0  # all zero
    compiled[:, 1] = 1.5  # constant
    compiled[:, 2] = -reference[:, 2]  # SQNR 10 log10(1/4) = -6 dB
    compiled[:, 5] = 0.0
    axis1, axis2 = check_channels(reference, compiled)
    assert (axis1.axis, axis1.size, axis1.dead, axis1.low) == (1, 6, (0, 1), (2,))
    assert axis1.low_db[0] == pytest.approx(-6.02, abs=0.01) and axis1.worst == 2
    assert (axis2.axis, axis2.size, axis2.dead) == (2, 5, ())  # every column holds good channels too


def test_a_nearly_constant_reference_channel_is_not_dead_when_the_compiled_one_is_constant():
    """FP16 outputs round a channel of 1.0 +- 1e-5 to 1.0: no information lost."""
    reference = 1.0 + 1e-5 * np.random.default_rng(1).standard_normal((4, 3, 2))
    axis1, _ = check_channels(reference, np.ones_like(reference))
    assert axis1.dead == () and axis1.low == ()

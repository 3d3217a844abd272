"""equalize-channels, checked with onnxruntime numbers against the float model.

Two small models carry the two shapes it rescales: a PP-LCNet-style chain conv -> HardSwish -> scalar
Mul/Add whose channels spread over decades, read by a dense and a depthwise conv that compensate; and a
Concat of two conv members 1000x apart (one through a nearest Resize) read by a 3x3 conv. The pass keeps
each float function and lifts each INT8 SQNR."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.cli import main
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.pm.registry import load_passes

load_passes()

STEPS = "place-qdq,calibrate{method=max},unify-scales,fold-scales,cleanup-qdq,legalize-trt,verify-trt"


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _conv(name: str, src: str, dst: str, weight: np.ndarray, group: int = 1) -> tuple[onnx.NodeProto, list]:
    k = weight.shape[-1]
    bias = np.linspace(-0.3, 0.3, weight.shape[0])
    node = helper.make_node(
        "Conv", [src, f"{name}.w", f"{name}.b"], [dst], name=name, group=group, pads=[k // 2] * 4
    )
    return node, [_init(f"{name}.w", weight), _init(f"{name}.b", bias)]


def _model(nodes: list, inits: list, name: str, out_shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def affine_chain(seed: int = 0) -> onnx.ModelProto:
    """conv 3->16 (channel gains 10^-1.5..10^1.5) -> HardSwish -> Mul 0.8 -> Add 0.1, read by a 3x3 dense
    conv (weights compensating the gains) and a 3x3 depthwise conv, their outputs added."""
    rng = np.random.default_rng(seed)
    gains = 10.0 ** rng.uniform(-1.5, 1.5, size=16)
    w1 = rng.standard_normal((16, 3, 3, 3)) * 0.5 * gains.reshape(-1, 1, 1, 1)
    w2 = rng.standard_normal((16, 16, 3, 3)) * 0.1 / gains.reshape(1, -1, 1, 1)
    w3 = rng.standard_normal((16, 1, 3, 3)) / gains.reshape(-1, 1, 1, 1)
    nodes, inits = [], [_init("a", np.array(0.8)), _init("b", np.array(0.1))]
    convs = (("c1", "x", "t1", w1, 1), ("dense", "t", "d", w2, 1), ("dw", "t", "e", w3, 16))
    for conv, src, dst, w, g in convs:
        node, more = _conv(conv, src, dst, w, g)
        nodes.append(node)
        inits += more
    chain = [
        helper.make_node("HardSwish", ["t1"], ["h"], name="act"),
        helper.make_node("Mul", ["h", "a"], ["m"], name="lab_mul"),
        helper.make_node("Add", ["m", "b"], ["t"], name="lab_add"),
    ]
    ordered = [nodes[0], *chain, nodes[1], nodes[2], helper.make_node("Add", ["d", "e"], ["y"], name="sum")]
    return _model(ordered, inits, "affine_chain", [1, 16, 16, 16])


def distant_concat(seed: int = 0) -> onnx.ModelProto:
    """Two convs of 8 channels, ranges ~1 and ~1000 (the second at half resolution, then a nearest Resize),
    concatenated and read by a 3x3 conv whose weights for the big member are small."""
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((8, 3, 3, 3))
    big = rng.standard_normal((8, 3, 3, 3)) * 1000.0
    head = rng.standard_normal((4, 16, 3, 3))
    head[:, 8:] *= 1e-3**0.5
    nodes, inits = [], [_init("scales", np.array([1, 1, 2, 2]))]
    for conv, src, dst, w in (("small", "x", "p", small), ("head", "cat", "y", head)):
        node, more = _conv(conv, src, dst, w)
        nodes.append(node)
        inits += more
    node, more = _conv("big", "x", "q0", big)
    node.attribute.append(helper.make_attribute("strides", [2, 2]))
    inits += more
    resize = helper.make_node("Resize", ["q0", "", "scales"], ["q"], name="up", mode="nearest")
    concat = helper.make_node("Concat", ["p", "q"], ["cat"], name="cat", axis=1)
    ordered = [nodes[0], node, resize, concat, nodes[1]]
    return _model(ordered, inits, "distant_concat", [1, 4, 16, 16])


def _batches(seed: int = 1, count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(count)]


def _equalized(
    proto: onnx.ModelProto, pipeline: str = "prepare,equalize-channels"
) -> tuple[onnx.ModelProto, dict]:
    model = load_model(proto)
    calib = np.concatenate([b["x"] for b in _batches(seed=2, count=8)])
    results = PassManager(pipeline).run(model, PassContext(calibration_data=calib))
    statistics = {key: value for result in results for key, value in result.statistics.items()}
    return to_proto(model), statistics


@pytest.mark.parametrize("build", [affine_chain, distant_concat])
def test_equalize_channels_keeps_the_float_function(build):
    source = build()
    equalized, statistics = _equalized(source)
    assert statistics.get("num-channels-rescaled", 0) > 0, statistics
    before, after = run_outputs(source, _batches()), run_outputs(equalized, _batches())
    relative = np.abs(before["y"] - after["y"]).max() / np.abs(before["y"]).max()
    assert relative < 1e-4, relative


def test_the_trailing_affine_becomes_per_channel_and_evens_the_ranges():
    source = affine_chain()
    equalized, _ = _equalized(source)
    mul = next(n for n in equalized.graph.node if n.name == "lab_mul")
    constant = next(i for i in equalized.graph.initializer if i.name in mul.input)
    assert list(constant.dims) == [1, 16, 1, 1]

    def spread(proto: onnx.ModelProto) -> float:
        cut = onnx.ModelProto()
        cut.CopyFrom(proto)
        cut.graph.output.append(onnx.ValueInfoProto(name="t"))
        values = np.abs(run_outputs(cut, _batches())["t"]).max(axis=(0, 2, 3))
        return float(values.max() / np.median(values))

    assert spread(source) > 5 * spread(equalized), (spread(source), spread(equalized))  # measured 13.2 vs 1.3


def _int8_sqnr(tmp_path, proto: onnx.ModelProto, pipeline: str, label: str) -> float:
    source, calib, out = tmp_path / "src.onnx", tmp_path / "calib.npy", tmp_path / f"{label}.onnx"
    onnx.save(proto, source)
    np.save(calib, np.concatenate([b["x"] for b in _batches(seed=2, count=16)]))
    args = ["-q", "compile", str(source), "--calib", str(calib), "--quantize-head", "--no-check"]
    assert main([*args, "--pipeline", pipeline, "-o", str(out)]) == 0
    reference = run_outputs(proto, _batches(seed=3, count=8))
    return sqnr_db(reference["y"], run_outputs(onnx.load(out), _batches(seed=3, count=8))["y"])


@pytest.mark.parametrize("build", [affine_chain, distant_concat])
def test_equalize_channels_lifts_int8_sqnr(tmp_path, build):
    plain = _int8_sqnr(tmp_path, build(), f"prepare,{STEPS}", "plain")
    equalized = _int8_sqnr(tmp_path, build(), f"prepare,equalize-channels,{STEPS}", "equalized")
    assert equalized > plain + 3.0, (plain, equalized)


def test_options_switch_each_shape_off():
    _, statistics = _equalized(distant_concat(), "prepare,equalize-channels{concat=false}")
    assert statistics.get("num-channels-rescaled", 0) == 0
    _, statistics = _equalized(affine_chain(), "prepare,equalize-channels{affine=false}")
    assert statistics.get("num-channels-rescaled", 0) == 0


def test_a_tensor_read_by_a_non_conv_is_left_alone():
    source = affine_chain()
    source.graph.node.append(helper.make_node("Relu", ["t"], ["r"], name="extra"))
    source.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 16, 16, 16]))
    _, statistics = _equalized(source)
    assert statistics.get("num-sites", 0) == 0


def test_without_calibration_data_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(affine_chain(), path)
    code = main(["opt", str(path), "--pipeline", "prepare,equalize-channels", "-o", str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("qdqc: error: ") and "measures the channel ranges" in err and "--calib DATA" in err
    assert "\n" not in err


def test_per_channel_affine_constants_add_no_standalone_qdq(tmp_path, capsys):
    """TensorRT fuses a [1, C, 1, 1] constant Mul/Add as it fuses a scalar one: qdqc explain predicts the
    same reformat layers with and without the pass (segmenter_wide: 20 and 20)."""
    counts = {}
    for label, pipeline in (
        ("plain", f"prepare,{STEPS}"),
        ("equalized", f"prepare,equalize-channels,{STEPS}"),
    ):
        _int8_sqnr(tmp_path, affine_chain(), pipeline, label)
        capsys.readouterr()
        assert main(["explain", str(tmp_path / f"{label}.onnx"), "--json"]) == 0
        counts[label] = len(json.loads(capsys.readouterr().out)["reformats"])
    assert counts["equalized"] == counts["plain"], counts

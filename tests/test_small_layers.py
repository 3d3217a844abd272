"""Small-layer and squeeze-excitation placement rules: which layers stay float, and the numbers still
match the float model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.cli import main
from qdq_compiler.ir import load_model
from qdq_compiler.quant.decisions import layer_decisions
from qdq_compiler.targets.trt_rules import small_layer_reason


def _node(op_type: str, **attrs: int) -> ir.Node:
    attributes = [ir.AttrInt64(name, value) for name, value in attrs.items()]
    return ir.Node("", op_type, inputs=[], attributes=attributes)


@pytest.mark.parametrize(
    ("op_type", "dims", "attrs", "graph_input", "small"),
    [
        ("Conv", (16, 16, 3, 3), {}, False, False),  # 16 -> 16: the usual kernels
        ("Conv", (8, 8, 1, 1), {}, False, True),  # 8 -> 8: aligned, but nothing wide on either side
        ("Conv", (8, 32, 1, 1), {}, False, False),  # 32 -> 8: a multiple of 8, wide input
        ("Conv", (16, 3, 3, 3), {}, True, False),  # the RGB stem: 3 -> 16 reading the graph input
        ("Conv", (12, 3, 3, 3), {}, True, True),  # 3 -> 12: neither side a multiple of 8
        ("Conv", (16, 8, 3, 1), {}, False, True),  # 8 -> 16 with a 3x1 kernel: not square
        ("Conv", (24, 1, 3, 3), {"group": 24}, False, False),  # depthwise 24, 3x3
        ("Conv", (20, 1, 3, 3), {"group": 20}, False, True),  # depthwise 20: not 8k
        ("Conv", (24, 1, 1, 1), {"group": 24}, False, True),  # depthwise 1x1 kernel
        ("Gemm", (2, 64), {"transB": 1}, False, True),  # a 2-class head: N = 2
        ("Gemm", (64, 32), {}, False, False),  # K = 64, N = 32
        ("ConvTranspose", (4, 4, 2, 2), {}, False, False),  # not judged
    ],
)
def test_small_layer_reason_follows_the_int8_kernel_sizes(op_type, dims, attrs, graph_input, small):
    reason = small_layer_reason(_node(op_type, **attrs), dims, graph_input)
    assert (reason is not None) == small, reason


def _conv(name, src, dst, weight, inits, **attrs):
    inits.append(numpy_helper.from_array(weight.astype(np.float32), f"{name}.w"))
    pad = weight.shape[-1] // 2
    return helper.make_node("Conv", [src, f"{name}.w"], [dst], name=name, pads=[pad] * 4, **attrs)


def se_model(seed: int = 0) -> onnx.ModelProto:
    """stem 3->32 -> Relu -> 1x1 32->8 -> Relu -> 1x1 8->8 -> SE(8 -> 4 -> 8) -> Mul -> 1x1 8->32."""
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes = [
        _conv("stem", "x", "s", rng.standard_normal((32, 3, 3, 3)) * 0.3, inits),
        helper.make_node("Relu", ["s"], ["s_act"]),
        _conv("squeeze8", "s_act", "a", rng.standard_normal((8, 32, 1, 1)) * 0.2, inits),
        helper.make_node("Relu", ["a"], ["a_act"]),
        _conv("narrow8", "a_act", "b", rng.standard_normal((8, 8, 1, 1)) * 0.4, inits),
        helper.make_node("Relu", ["b"], ["b_act"]),
        helper.make_node("GlobalAveragePool", ["b_act"], ["pooled"]),
        _conv("se_reduce", "pooled", "r", rng.standard_normal((4, 8, 1, 1)) * 0.5, inits),
        helper.make_node("Relu", ["r"], ["r_act"]),
        _conv("se_expand", "r_act", "e", rng.standard_normal((8, 4, 1, 1)) * 0.5, inits),
        helper.make_node("HardSigmoid", ["e"], ["gate"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["b_act", "gate"], ["scaled"]),
        _conv("expand32", "scaled", "y", rng.standard_normal((32, 8, 1, 1)) * 0.3, inits),
    ]
    graph = helper.make_graph(
        nodes,
        "se",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 16, 16])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _compile(tmp_path, place: str) -> tuple[dict[str, str], float]:
    source, calib, out = tmp_path / "se.onnx", tmp_path / "calib.npy", tmp_path / "out.onnx"
    onnx.save(se_model(), source)
    samples = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)
    np.save(calib, samples)
    pipeline = f"upgrade-opset,prepare,{place},calibrate,unify-scales,fold-scales,cleanup-qdq,legalize-trt"
    args = ["-q", "compile", str(source), "--calib", str(calib), "--quantize-head", "--no-check"]
    assert main([*args, "--pipeline", pipeline, "-o", str(out)]) == 0
    floats = {d.node_name: d.reason for d in layer_decisions(load_model(out)).values() if not d.int8}
    batches = [{"x": samples[i : i + 1]} for i in range(8)]
    sqnr = sqnr_db(run_outputs(onnx.load(source), batches)["y"], run_outputs(onnx.load(out), batches)["y"])
    return floats, sqnr


def test_default_placement_quantizes_every_layer_of_the_se_model(tmp_path):
    floats, sqnr = _compile(tmp_path, "place-qdq")
    assert floats == {}
    assert sqnr > 25


def test_trt_kernels_rule_keeps_the_narrow_convs_float_and_the_numbers_hold(tmp_path):
    floats, sqnr = _compile(tmp_path, "place-qdq{small-layers=trt-kernels}")
    assert set(floats) == {"narrow8", "se_reduce", "se_expand"}
    assert "8->8 channels" in floats["narrow8"]
    assert sqnr > 25


def test_pooled_float_keeps_only_the_squeeze_excitation_convs_float(tmp_path):
    floats, sqnr = _compile(tmp_path, "place-qdq{pooled-float=true}")
    assert set(floats) == {"se_reduce", "se_expand"}
    assert all("squeeze-excitation" in reason for reason in floats.values())
    assert sqnr > 25


def test_unknown_small_layers_rule_is_one_line_error(tmp_path, capsys):
    source = tmp_path / "se.onnx"
    onnx.save(se_model(), source)
    code = main(
        ["opt", str(source), "--pipeline", "place-qdq{small-layers=tiny}", "-o", str(tmp_path / "o.onnx")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and "unknown small-layers rule 'tiny' (valid: min-channels, trt-kernels)" in err

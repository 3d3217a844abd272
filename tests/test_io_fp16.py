"""`--target trt11 --io-fp16`: the graph inputs and outputs become float16, and the model stays valid ONNX
that onnxruntime runs with float16 inputs (float32 Resize scales and integer inputs keep their types)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from helpers import run_onnx
from onnx import TensorProto, helper, numpy_helper
from test_selfcheck import _two_branches

from qdq_compiler.accuracy import sqnr_db
from qdq_compiler.cli import main
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager


def _elem_types(values) -> dict[str, int]:
    return {value.name: value.type.tensor_type.elem_type for value in values}


def test_compile_with_io_fp16_writes_a_valid_model_that_runs_on_float16_inputs(tmp_path, capsys):
    model, data, out = tmp_path / "two.onnx", tmp_path / "two.npy", tmp_path / "two.fp16.onnx"
    onnx.save(_two_branches(), model)
    samples = np.random.default_rng(4).standard_normal((8, 4, 8, 8)).astype(np.float32)
    np.save(data, samples)
    args = [
        "compile",
        str(model),
        "-o",
        str(out),
        "--calib",
        str(data),
        "--quantize-head",
        "--target",
        "trt11",
        "--io-fp16",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    compiled = onnx.load(str(out))
    onnx.checker.check_model(compiled, full_check=True)
    assert _elem_types(compiled.graph.input) == {"x": TensorProto.FLOAT16}
    assert _elem_types(compiled.graph.output) == {"out_a": TensorProto.FLOAT16, "out_b": TensorProto.FLOAT16}
    feeds = {"x": samples[4:]}  # held out from the self-check's first 4
    reference = run_onnx(_two_branches(), feeds)
    actual = run_onnx(compiled, {"x": samples[4:].astype(np.float16)})
    for expected, got in zip(reference, actual, strict=True):
        assert got.dtype == np.float16
        assert sqnr_db(expected.astype(np.float64), got.astype(np.float64)) > 25.0
    # the self-check fed the compiled model float16 and found both outputs sound
    line = next(line for line in captured.out.splitlines() if line.startswith("self-check"))
    found = dict(re.findall(r"(out_[ab]) (\d+\.\d+) dB", line))
    assert set(found) == {"out_a", "out_b"} and min(map(float, found.values())) > 25.0, line
    assert "self-check" not in captured.err


def _mixed_io_model() -> onnx.ModelProto:
    """x (float, through Q/DQ) -> Conv -> Resize by the graph input `scales` (float32 by ONNX's rule),
    plus a Gather of the bias by the int64 graph input `pick`."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    w_scale = np.abs(weight).reshape(4, -1).max(axis=1) / 127
    inits = [
        numpy_helper.from_array(
            np.clip(np.round(weight / w_scale[:, None, None, None]), -127, 127).astype(np.int8), "w_q"
        ),
        numpy_helper.from_array(w_scale.astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(np.float32(3.0 / 127), "x_scale"),
        numpy_helper.from_array(np.int8(0), "x_zp"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([], np.float32), "roi"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["x_dq", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c", "roi", "scales"], ["r"], name="resize", mode="nearest"),
        helper.make_node("Gather", ["bias", "pick"], ["b"], name="gather"),
        helper.make_node("Unsqueeze", ["b", "axes"], ["b4"], name="unsqueeze"),
        helper.make_node("Add", ["r", "b4"], ["y"], name="add"),
    ]
    inits.append(numpy_helper.from_array(np.array([0, 2, 3], np.int64), "axes"))
    graph = helper.make_graph(
        nodes,
        "mixed",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("pick", TensorProto.INT64, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h", "w"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


@pytest.mark.parametrize("io_fp16", [True, False])
def test_io_fp16_retypes_float_inputs_only(io_fp16):
    source = _mixed_io_model()
    model = load_model(source)
    PassManager(f"legalize-trt{{target=trt11,io-fp16={str(io_fp16).lower()}}}").run(model, PassContext())
    legal = to_proto(model)
    onnx.checker.check_model(legal, full_check=True)
    float_io = TensorProto.FLOAT16 if io_fp16 else TensorProto.FLOAT
    assert _elem_types(legal.graph.input) == {
        "x": float_io,
        "scales": TensorProto.FLOAT,
        "pick": TensorProto.INT64,
    }
    assert _elem_types(legal.graph.output) == {"y": float_io}
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    feeds = {"scales": np.array([1, 1, 2, 2], np.float32), "pick": np.array([3, 0, 1, 1], np.int64)}
    (expected,) = run_onnx(source, {"x": x, **feeds})
    (actual,) = run_onnx(legal, {"x": x.astype(np.float16 if io_fp16 else np.float32), **feeds})
    assert actual.shape == (1, 4, 16, 16) and actual.dtype == (np.float16 if io_fp16 else np.float32)
    assert sqnr_db(expected.astype(np.float64), actual.astype(np.float64)) > 40.0  # FP16 rounding only

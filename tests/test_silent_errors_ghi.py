"""Issue 12, 2g-2i: degenerate inputs warn, malformed models fail in one line, multi-input calibration."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.calib.data import CalibrationDataError, open_calibration_data
from qdq_compiler.cli import main

OPSET = [helper.make_opsetid("", 17)]


def matmul_of_two_inputs() -> onnx.ModelProto:
    """Y = (A[32,64] x B[64,64]) x W: two graph inputs with different first dimensions and no batch axis."""
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [32, 64])
    b = helper.make_tensor_value_info("B", TensorProto.FLOAT, [64, 64])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [32, 16])
    weight = np.random.default_rng(3).standard_normal((64, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["A", "B"], ["AB"], name="ab"),
             helper.make_node("MatMul", ["AB", "W"], ["Y"], name="abw")]
    graph = helper.make_graph(nodes, "ab", [a, b], [y], [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=OPSET)


def stacked_ab_samples(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"A": rng.standard_normal((count, 32, 64)).astype(np.float32),
            "B": rng.standard_normal((count, 64, 64)).astype(np.float32)}


# --------------------------------------------------------------------------- 2i: multi-input calibration
def test_stacked_samples_feed_each_input_whole() -> None:
    model = matmul_of_two_inputs()
    samples = stacked_ab_samples(3)
    data = open_calibration_data(samples, model)
    batches = list(data)
    assert data.num_samples == 3 and len(batches) == 3
    for index, batch in enumerate(batches):
        assert batch["A"].shape == (32, 64) and batch["B"].shape == (64, 64)
        np.testing.assert_array_equal(batch["A"], samples["A"][index])
        np.testing.assert_array_equal(batch["B"], samples["B"][index])


def test_stacked_samples_of_a_single_input_from_npy(tmp_path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 64])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=OPSET)
    path = tmp_path / "x.npy"
    np.save(path, np.arange(5 * 32 * 64, dtype=np.float32).reshape(5, 32, 64))
    batches = list(open_calibration_data(path, model))
    assert [b["x"].shape for b in batches] == [(32, 64)] * 5
    assert batches[4]["x"][0, 0] == 4 * 32 * 64


def test_stacked_and_batch_layouts_mix_when_batch_is_one() -> None:
    """An image input in the batch layout ([N,3,8,8] for [?,3,8,8]) and a per-run vector stacked ([N,2])."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 8, 8])
    scale = helper.make_tensor_value_info("scale", TensorProto.FLOAT, [2])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["out"])], "g", [image, scale], [out])
    model = helper.make_model(graph, opset_imports=OPSET)
    rng = np.random.default_rng(0)
    arrays = {"image": rng.standard_normal((4, 3, 8, 8)).astype(np.float32),
              "scale": rng.standard_normal((4, 2)).astype(np.float32)}
    batches = list(open_calibration_data(arrays, model))
    assert [(b["image"].shape, b["scale"].shape) for b in batches] == [((1, 3, 8, 8), (2,))] * 4
    with pytest.raises(CalibrationDataError, match="one sample per run"):
        open_calibration_data(arrays, model, batch_size=2)


def test_compile_two_input_matmul_from_stacked_npz(tmp_path, capsys) -> None:
    model_path, data_path, out_path = tmp_path / "ab.onnx", tmp_path / "ab.npz", tmp_path / "ab.int8.onnx"
    onnx.save_model(matmul_of_two_inputs(), model_path)
    np.savez(data_path, **stacked_ab_samples(8))
    assert main(["compile", str(model_path), "-o", str(out_path), "--calib", str(data_path),
                 "--quantize-head"]) == 0
    compiled = onnx.load(out_path)
    assert sum(n.op_type == "QuantizeLinear" for n in compiled.graph.node) >= 1
    feeds = stacked_ab_samples(2, seed=7)
    batches = [{name: feeds[name][i] for name in feeds} for i in range(2)]
    reference = run_outputs(matmul_of_two_inputs(), batches)["Y"]
    quantized = run_outputs(compiled, batches)["Y"]
    assert sqnr_db(reference, quantized) > 30.0


def test_stacked_layout_is_part_of_the_cache_key(tmp_path) -> None:
    """The data hash covers the data actually fed: a different limit or content gives another key."""
    from qdq_compiler.calib import cache_key

    model = matmul_of_two_inputs()
    first = cache_key(model, open_calibration_data(stacked_ab_samples(4), model), 2048)
    again = cache_key(model, open_calibration_data(stacked_ab_samples(4), model), 2048)
    fewer = cache_key(model, open_calibration_data(stacked_ab_samples(4), model, limit=2), 2048)
    other = cache_key(model, open_calibration_data(stacked_ab_samples(4, seed=1), model), 2048)
    assert first == again and first != fewer and first != other
    assert first.batch_size == 1

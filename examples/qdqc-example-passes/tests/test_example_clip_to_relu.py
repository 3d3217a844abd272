"""clip-to-relu: what it rewrites, what it leaves, and that the rewritten model computes the same numbers."""

from __future__ import annotations

import numpy as np
import onnx
from qdqc_example_passes.clip_to_relu import ClipToRelu

from qdq_compiler.api import (
    PassContext,
    PassManager,
    compare_outputs,
    load_model,
    op_counts,
    run_outputs,
    to_proto,
)
from qdq_compiler.pm import get_pass


def parse(text: str):
    return load_model(onnx.parser.parse_model(text))


def run_clip_to_relu(model):
    (result,) = PassManager("clip-to-relu").run(model, PassContext(), stamp=False)
    return result


def same_numbers(before: onnx.ModelProto, after) -> bool:
    """Both models give bit-identical outputs in onnxruntime on values around the Clip's edges."""
    batch = {"x": np.array([[-np.inf, -2.5, -0.0, 0.0, 1e-30, 3.0, 7.5, 3e38]], dtype=np.float32)}
    reference = run_outputs(before, [batch])
    actual = run_outputs(to_proto(after), [batch])
    return compare_outputs(reference, actual).sqnr_db == np.inf and all(
        np.array_equal(actual[name], values) for name, values in reference.items()
    )


OPSET_17 = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8] x) => (float[1, 8] y) <float zero = {0.0}, float top = {%s}> {
   [clip] c = Clip(x, zero, top)
   [neg] y = Neg(c)
}"""


def test_the_entry_point_registers_the_pass() -> None:
    assert get_pass("clip-to-relu") is ClipToRelu


def test_clip_zero_inf_becomes_relu_with_the_same_numbers() -> None:
    model = parse(OPSET_17 % "inf")
    before = to_proto(model)
    result = run_clip_to_relu(model)
    assert result.modified and result.statistics["num-clip-to-relu"] == 1
    assert op_counts(model.graph) == {"Relu": 1, "Neg": 1}
    assert "top" not in model.graph.initializers
    assert same_numbers(before, model)
    assert not run_clip_to_relu(model).modified


def test_a_bounded_clip_stays() -> None:
    model = parse(OPSET_17 % "6.0")
    result = run_clip_to_relu(model)
    assert not result.modified
    assert op_counts(model.graph) == {"Clip": 1, "Neg": 1}


def test_opset_10_clip_attribute_form() -> None:
    model = parse(
        """<ir_version: 5, opset_import: ["" : 10]>
        g (float[1, 8] x) => (float[1, 8] y) { [clip] c = Clip<min = 0.0>(x)  [neg] y = Neg(c) }"""
    )
    before = to_proto(model)
    result = run_clip_to_relu(model)
    assert result.statistics["num-clip-to-relu"] == 1
    assert op_counts(model.graph) == {"Relu": 1, "Neg": 1}
    assert same_numbers(before, model)

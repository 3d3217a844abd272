"""The scale-benchmark graphs (bench/bench_ir.py): exact node counts, valid ONNX, run in onnxruntime."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

from qdq_compiler.accuracy.numerics import run_outputs
from qdq_compiler.models import SCALE_SHAPES, build_scale_model


def _non_constant_inputs(model: onnx.ModelProto) -> collections.Counter[str]:
    inits = {t.name for t in model.graph.initializer}
    return collections.Counter(i for n in model.graph.node for i in n.input if i not in inits)


@pytest.mark.parametrize("shape", SCALE_SHAPES)
@pytest.mark.parametrize("num_nodes", [1, 23, 60])
def test_scale_model_is_valid_and_runs(shape: str, num_nodes: int) -> None:
    model = build_scale_model(shape, num_nodes)
    assert len(model.graph.node) == num_nodes
    onnx.checker.check_model(model, full_check=True)
    batch = {"input": np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32)}
    output = run_outputs(model, [batch])["output"]
    assert output.shape == (1, 4, 4, 4)
    assert np.isfinite(output).all() and np.abs(output).max() > 0


def test_scale_model_shapes_differ_as_documented() -> None:
    ops = {
        s: collections.Counter(n.op_type for n in build_scale_model(s, 60).graph.node) for s in SCALE_SHAPES
    }
    assert ops["chain"] == {"Conv": 30, "Relu": 30}
    assert ops["ladder"] == {"Conv": 20, "Relu": 20, "Add": 20}
    assert ops["fanin"]["Concat"] == 5 and ops["fanin"]["Conv"] == 45
    ladder_uses = _non_constant_inputs(build_scale_model("ladder", 60))
    assert max(ladder_uses.values()) == 2  # every rung's input feeds its Conv and its Add
    concat = next(n for n in build_scale_model("fanin", 60).graph.node if n.op_type == "Concat")
    assert len(concat.input) == 8


def test_scale_model_rejects_unknown_shape() -> None:
    with pytest.raises(ValueError, match="unknown shape"):
        build_scale_model("star", 10)

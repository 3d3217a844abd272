"""The fold-bn golden cases fold real per-channel scales (gamma / sqrt(var + eps) != 1): their folded
constants follow the formula, and the folded models compute what the float models compute (onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qdq_compiler.accuracy.numerics import run_outputs
from qdq_compiler.golden import GoldenCase, read_cases
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager

FOLD_BN = Path(__file__).resolve().parent.parent / "golden" / "fold-bn"
# Case -> (the folded layer, the axis of its weight that holds the output channels).
FOLDED_CASES = {"conv_bn": ("c", 0), "conv_transpose_bn": ("c", 1), "gemm_bn": ("g1", 0)}


def case(name: str) -> GoldenCase:
    (only,) = read_cases(FOLD_BN / f"{name}.onnxtxt")
    return only


def float_and_folded(name: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    golden = case(name)
    original = onnx.parser.parse_model(golden.model_text)
    model = load_model(original)
    PassManager(golden.pipeline).run(model, PassContext(), stamp=False)
    return original, to_proto(model)


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def bn_parameters(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray, float]:
    """(scale s = gamma / sqrt(var + eps), shift beta - mean * s, eps) of the model's BatchNormalization."""
    (bn,) = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    values = initializers(model)
    gamma, beta, mean, var = (values[name].astype(np.float64) for name in bn.input[1:])
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale, eps


@pytest.mark.parametrize("name", sorted(FOLDED_CASES))
def test_golden_bn_scales_are_not_one(name: str) -> None:
    """Each case exercises per-channel scaling: a scale of 1 would hide a missing or misplaced multiply."""
    scale, _, _ = bn_parameters(float_and_folded(name)[0])
    assert np.all(np.abs(scale - 1.0) > 0.1), f"{name}: gamma / sqrt(var + eps) = {scale}"
    assert len(set(scale.tolist())) == len(scale), f"{name}: equal scales hide an axis mistake: {scale}"


@pytest.mark.parametrize("name", sorted(FOLDED_CASES))
def test_folded_constants_follow_the_formula(name: str) -> None:
    """w' = w * s along the output-channel axis, b' = (b - mean) * s + beta; s = gamma / sqrt(var + eps)."""
    original, folded = float_and_folded(name)
    layer, axis = FOLDED_CASES[name]
    scale, shift, _ = bn_parameters(original)
    (node,) = [n for n in original.graph.node if n.name == layer or layer in n.output]
    before = initializers(original)
    weight = before[node.input[1]].astype(np.float64)
    bias = before[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros_like(scale)
    shape = [1] * weight.ndim
    shape[axis] = -1
    after = initializers(folded)
    np.testing.assert_allclose(after[f"{layer}.weight_folded"], weight * scale.reshape(shape), rtol=1e-6)
    np.testing.assert_allclose(after[f"{layer}.bias_folded"], bias * scale + shift, rtol=1e-6, atol=1e-7)


def test_conv_bn_folded_weight_by_hand() -> None:
    """golden/fold-bn/conv_bn.onnxtxt: eps 0.5, gamma [3, 0.5], var [3.5, 0.5] give s = [3/2, 0.5/1];
    w = [1, 2] folds to [1.5, 1], and b' = beta - mean * s = [1 - 0.75, -1 - 0.5] = [0.25, -1.5]."""
    after = initializers(float_and_folded("conv_bn")[1])
    assert after["c.weight_folded"].reshape(-1).tolist() == [1.5, 1.0]
    assert after["c.bias_folded"].tolist() == [0.25, -1.5]


@pytest.mark.parametrize("name", [*sorted(FOLDED_CASES), "shared_conv_output_not_folded"])
def test_folded_model_matches_float_model_in_onnxruntime(name: str) -> None:
    original, folded = float_and_folded(name)
    rng = np.random.default_rng(0)
    inputs = {}
    for value in original.graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        inputs[value.name] = rng.standard_normal([4, *dims[1:]]).astype(np.float32)
    batches = [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(4)]
    expected = run_outputs(original, batches)
    actual = run_outputs(folded, batches)
    assert expected.keys() == actual.keys()
    for output in expected:
        np.testing.assert_allclose(actual[output], expected[output], rtol=1e-5, atol=1e-5, err_msg=output)

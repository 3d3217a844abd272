"""The weighted-op table: which input is the weight, and its output-channel (per-channel scale) axis."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from qdq_compiler.targets.trt_rules import weighted_rule


def node(op_type: str, **ints: int) -> ir.Node:
    attrs = [ir.AttrInt64(name, value) for name, value in ints.items()]
    return ir.Node("", op_type, [ir.Value(name="x"), ir.Value(name="w")], attrs)


@pytest.mark.parametrize(
    "op, attrs, rank, axis",
    [
        ("Conv", {}, 4, 0),
        ("ConvTranspose", {}, 4, 1),
        ("Gemm", {"transB": 1}, 2, 0),
        ("Gemm", {"transB": 0}, 2, 1),
        ("Gemm", {}, 2, 1),  # transB defaults to 0
        ("MatMul", {}, 2, 1),  # B is [K, N]
        ("MatMul", {}, 3, 2),
    ],
)
def test_weight_axis(op: str, attrs: dict, rank: int, axis: int) -> None:
    n = node(op, **attrs)
    rule = weighted_rule(n)
    assert rule is not None and rule.weight_input == 1
    assert rule.weight_axis(n, rank) == axis


def test_non_weighted_ops_have_no_rule() -> None:
    assert weighted_rule(node("Relu")) is None

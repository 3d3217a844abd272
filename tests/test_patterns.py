"""Declarative rewrite patterns: each matcher feature matching and not, rewrites checked in onnxruntime."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest

from qdq_compiler.api import (
    Match,
    PassContext,
    PassManager,
    Pattern,
    Rewriter,
    apply_patterns_greedily,
    compare_outputs,
    const,
    equals,
    load_model,
    op,
    op_counts,
    pattern_pass,
    run_outputs,
    to_proto,
    var,
)

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def model_of(body: str, signature: str = "(float[1, 4] x) => (float[1, 4] y)", init: str = ""):
    """An IR model from an ONNX-text body; `init` is the initializer list between the angle brackets."""
    inits = f"<{init}>" if init else ""
    return load_model(onnx.parser.parse_model(f"{HEADER}\ng {signature} {inits} {{\n{body}\n}}"))


def node_named(model, name: str):
    return next(node for node in model.graph if node.name == name)


def first_match(pattern: Pattern, model, anchor: str) -> Match | str:
    """What `pattern` finds rooted at the node named `anchor` (a Match, or why not)."""
    return next(iter(pattern.matches(node_named(model, anchor), Rewriter(model.graph))))


def relu_of_x(m: Match):
    return m.op("Relu", m["x"])


CLIP_TO_RELU = Pattern(
    "clip-zero-inf-to-relu",
    op("Clip", "x", const("low", equals(0)), const("high", equals(np.inf), optional=True), name="clip"),
    rewrite=relu_of_x,
)


# ---- op types ----


def test_op_type_matches_and_binds_values_and_nodes() -> None:
    model = model_of("[clip] y = Clip(x, lo)", init="float lo = {0.0}")
    found = first_match(CLIP_TO_RELU, model, "clip")
    assert isinstance(found, Match)
    assert found["x"] is model.graph.inputs[0]
    assert found.node("clip") is found.root
    assert found.array("low") == 0.0 and found["high"] is None


def test_other_op_type_does_not_match() -> None:
    pattern = Pattern("neg-of-abs", op("Neg", op("Abs", "x")), rewrite=relu_of_x)
    model = model_of("a = Relu(x)\n[neg] y = Neg(a)")
    assert first_match(pattern, model, "neg") == "Relu computing 'a' is not Abs"


def test_interior_op_type_alternatives_match_either() -> None:
    pattern = Pattern("neg-of-act", op("Neg", op(("Abs", "Relu"), "x", name="act")), rewrite=relu_of_x)
    for act in ("Abs", "Relu"):
        found = first_match(pattern, model_of(f"a = {act}(x)\n[neg] y = Neg(a)"), "neg")
        assert isinstance(found, Match) and found.node("act").op_type == act
    assert isinstance(first_match(pattern, model_of("a = Sigmoid(x)\n[neg] y = Neg(a)"), "neg"), str)


def test_root_must_have_one_op_type() -> None:
    with pytest.raises(ValueError, match="one op type"):
        Pattern("two-roots", op(("Relu", "Abs"), "x"), rewrite=relu_of_x)


# ---- attributes ----

LEAKY = Pattern("leaky-zero", op("LeakyRelu", "x", attrs={"alpha": 0.0}), rewrite=relu_of_x)


def test_attribute_value_matches() -> None:
    model = model_of("[leaky] y = LeakyRelu<alpha = 0.0>(x)")
    assert isinstance(first_match(LEAKY, model, "leaky"), Match)


def test_attribute_value_differs() -> None:
    model = model_of("[leaky] y = LeakyRelu<alpha = 0.1>(x)")
    found = first_match(LEAKY, model, "leaky")
    assert isinstance(found, str) and "alpha" in found


def test_left_out_attribute_compares_with_the_schema_default() -> None:
    """LeakyRelu's alpha defaults to 0.01: a node without it is alpha=0.01, not 0."""
    model = model_of("[leaky] y = LeakyRelu(x)")
    assert isinstance(first_match(LEAKY, model, "leaky"), str)
    default = Pattern(
        "leaky-default", op("LeakyRelu", "x", attrs={"alpha": lambda a: abs(a - 0.01) < 1e-6}), relu_of_x
    )
    assert isinstance(first_match(default, model, "leaky"), Match)


def test_match_reads_attributes_with_their_defaults() -> None:
    pattern = Pattern("leaky-any", op("LeakyRelu", "x", name="act"), rewrite=relu_of_x)
    found = first_match(pattern, model_of("[leaky] y = LeakyRelu(x)"), "leaky")
    assert isinstance(found, Match)
    assert found.attr("act", "alpha") == pytest.approx(0.01)  # the schema default
    assert found.attr("act", "no_such", default="none") == "none"


def test_attribute_predicate() -> None:
    pattern = Pattern("gemm-bt", op("Gemm", "a", "b", attrs={"transB": lambda t: t == 1}), rewrite=relu_of_x)
    transposed = model_of(
        "[g] y = Gemm<transB = 1>(a, b)", "(float[2, 3] a, float[4, 3] b) => (float[2, 4] y)"
    )
    assert isinstance(first_match(pattern, transposed, "g"), Match)
    plain = model_of("[g] y = Gemm(a, b)", "(float[2, 3] a, float[3, 4] b) => (float[2, 4] y)")
    assert "transB=0 fails" in str(first_match(pattern, plain, "g"))


# ---- constant inputs ----


def test_constant_predicate_fails() -> None:
    model = model_of("[clip] y = Clip(x, lo)", init="float lo = {0.5}")
    found = first_match(CLIP_TO_RELU, model, "clip")
    assert isinstance(found, str) and "low" in found and "equals(0)" in found


def test_non_constant_input_is_not_a_constant() -> None:
    model = model_of("[clip] y = Clip(x, lo)", signature="(float[1, 4] x, float lo) => (float[1, 4] y)")
    found = first_match(CLIP_TO_RELU, model, "clip")
    assert isinstance(found, str) and "not a constant" in found


def test_constant_node_counts_as_constant_and_is_erased_when_dead() -> None:
    model = model_of("lo = Constant<value = float {0.0}>()\n[clip] y = Clip(x, lo)")
    rewriter = apply_patterns_greedily(model.graph, [CLIP_TO_RELU])
    assert rewriter.statistics["num-clip-zero-inf-to-relu"] == 1
    assert op_counts(model.graph) == {"Relu": 1}


def test_optional_input_left_out_or_given() -> None:
    given = model_of("[clip] y = Clip(x, lo, hi)", init="float lo = {0.0}, float hi = {inf}")
    assert isinstance(first_match(CLIP_TO_RELU, given, "clip"), Match)
    bounded = model_of("[clip] y = Clip(x, lo, hi)", init="float lo = {0.0}, float hi = {6.0}")
    assert "high fails" in str(first_match(CLIP_TO_RELU, bounded, "clip"))


def test_required_input_left_out_does_not_match() -> None:
    model = model_of("[clip] y = Clip(x)")
    found = first_match(CLIP_TO_RELU, model, "clip")
    assert isinstance(found, str) and "left out" in found


def test_inputs_past_the_pattern_do_not_match() -> None:
    pattern = Pattern("clip-one", op("Clip", "x", "low"), rewrite=relu_of_x)
    model = model_of("[clip] y = Clip(x, lo, hi)", init="float lo = {0.0}, float hi = {6.0}")
    assert "more than 2 inputs" in str(first_match(pattern, model, "clip"))


# ---- single-use interior values ----

NEG_NEG = Pattern("neg-neg", op("Neg", op("Neg", "x", name="inner")), rewrite=lambda m: m["x"])


def test_single_use_interior_matches_and_is_erased() -> None:
    model = model_of("a = Neg(x)\n[outer] b = Neg(a)\ny = Relu(b)")
    apply_patterns_greedily(model.graph, [NEG_NEG])
    assert op_counts(model.graph) == {"Relu": 1}


def test_interior_with_another_user_does_not_match() -> None:
    signature = "(float[1, 4] x) => (float[1, 4] y, float[1, 4] z)"
    model = model_of("a = Neg(x)\n[outer] y = Neg(a)\nz = Relu(a)", signature)
    found = first_match(NEG_NEG, model, "outer")
    assert isinstance(found, str) and "other users" in found


def test_interior_that_is_a_graph_output_does_not_match() -> None:
    signature = "(float[1, 4] x) => (float[1, 4] y, float[1, 4] a)"
    model = model_of("a = Neg(x)\n[outer] y = Neg(a)", signature)
    assert "other users" in str(first_match(NEG_NEG, model, "outer"))


def test_single_use_can_be_lifted_and_the_shared_node_stays() -> None:
    shared = Pattern(
        "neg-neg-shared",
        op("Neg", op("Neg", "x", single_use=False)),
        rewrite=lambda m: m.op("Identity", m["x"]),
    )
    signature = "(float[1, 4] x) => (float[1, 4] y, float[1, 4] z)"
    model = model_of("a = Neg(x)\n[outer] y = Neg(a)\nz = Relu(a)", signature)
    before = to_proto(model)
    apply_patterns_greedily(model.graph, [shared])
    assert op_counts(model.graph) == {"Neg": 1, "Identity": 1, "Relu": 1}
    assert_same_numbers(before, model)


# ---- commutative inputs and repeated names ----


def test_commutative_inputs_match_in_either_order() -> None:
    add_zero = Pattern(
        "add-zero", op("Add", "x", const("zero", equals(0)), commutative=True), lambda m: m["x"]
    )
    plain = Pattern("add-zero-plain", op("Add", "x", const("zero", equals(0))), lambda m: m["x"])
    model = model_of("[add] y = Add(zero, x)", init="float zero = {0.0}")
    assert isinstance(first_match(add_zero, model, "add"), Match)
    assert isinstance(first_match(plain, model, "add"), str)


def test_a_name_used_twice_binds_one_value() -> None:
    square = Pattern(
        "square", op("Mul", "x", "x"), rewrite=lambda m: m.op("Pow", m["x"], m.constant(np.float32(2), "two"))
    )
    signature = "(float[1, 4] x, float[1, 4] z) => (float[1, 4] y)"
    assert isinstance(first_match(square, model_of("[mul] y = Mul(x, x)", signature), "mul"), Match)
    assert "two different values" in str(
        first_match(square, model_of("[mul] y = Mul(x, z)", signature), "mul")
    )


# ---- check and rewrite ----


def test_check_refuses_with_its_reason(caplog) -> None:
    def scalar_only(m: Match) -> bool:
        return m.array("low").ndim == 0 or m.fail("low is not a scalar")

    checked = Pattern("clip-scalar", CLIP_TO_RELU.root, rewrite=relu_of_x, check=scalar_only)
    vector = model_of("[clip] y = Clip(x, lo)", init="float[1] lo = {0.0}")
    rewriter = apply_patterns_greedily(vector.graph, [checked])
    assert not rewriter.modified
    assert rewriter.match_failures == [("clip", "clip-scalar: low is not a scalar")]
    scalar = model_of("[clip] y = Clip(x, lo)", init="float lo = {0.0}")
    assert apply_patterns_greedily(scalar.graph, [checked]).modified


def test_rewrite_to_a_graph_input_keeps_the_output_name() -> None:
    """Neg(Neg(x)) -> x where the result is a graph output: an Identity keeps output `y`."""
    model = model_of("a = Neg(x)\n[outer] y = Neg(a)")
    before = to_proto(model)
    apply_patterns_greedily(model.graph, [NEG_NEG])
    assert op_counts(model.graph) == {"Identity": 1}
    assert [v.name for v in model.graph.outputs] == ["y"]
    assert_same_numbers(before, model)


# ---- pattern_pass ----

ClipToReluTest = pattern_pass(
    "clip-to-relu-test", "Clip(x, 0, +inf) -> Relu (patterns test).", [CLIP_TO_RELU]
)

CHAIN = """
[conv] c = Conv(x, w, b)
[clip] r = Clip(c, lo, hi)
[clip6] s = Clip(r, lo, six)
[neg] n = Neg(s)
[clip_open] y = Clip(n, lo)
"""
CHAIN_INIT = (
    "float[4, 3, 1, 1] w = {1,-2,3,-4,5,-6,7,-8,9,-1,2,-3}, float[4] b = {0.5,-0.5,1,-1}, "
    "float lo = {0.0}, float hi = {inf}, float six = {6.0}"
)
CHAIN_SIGNATURE = "(float[1, 3, 5, 5] x) => (float[1, 4, 5, 5] y)"


def test_pattern_pass_rewrites_every_match_and_keeps_the_numbers(caplog) -> None:
    model = model_of(CHAIN, CHAIN_SIGNATURE, CHAIN_INIT)
    before = to_proto(model)
    with caplog.at_level(logging.DEBUG, logger="qdqc"):
        (result,) = PassManager("clip-to-relu-test").run(model, PassContext(), stamp=False)
    assert result.modified
    assert result.statistics["num-clip-zero-inf-to-relu"] == 2
    assert result.statistics["num-initializers-removed"] == 1  # hi = inf
    assert op_counts(model.graph) == {"Conv": 1, "Relu": 2, "Clip": 1, "Neg": 1}
    assert "clip-zero-inf-to-relu did not apply at clip6" in caplog.text  # logged by the Rewriter
    assert_same_numbers(before, model)
    (again,) = PassManager("clip-to-relu-test").run(model, PassContext(), stamp=False)
    assert not again.modified


def test_pattern_pass_is_a_registered_pass_of_the_calling_module() -> None:
    from qdq_compiler.pm import get_pass

    assert get_pass("clip-to-relu-test") is ClipToReluTest
    assert ClipToReluTest.__module__ == __name__
    assert ClipToReluTest.summary.startswith("Clip(x, 0, +inf)")


def test_var_optional_binds_none() -> None:
    pattern = Pattern("clip-any", op("Clip", "x", var("low", optional=True)), rewrite=relu_of_x)
    found = first_match(pattern, model_of("[clip] y = Clip(x)"), "clip")
    assert isinstance(found, Match) and found["low"] is None
    with pytest.raises(KeyError, match="no value named 'nope'"):
        found["nope"]


def assert_same_numbers(before: onnx.ModelProto, after_model) -> None:
    """The rewritten model computes what the input model computed (onnxruntime, exact)."""
    rng = np.random.default_rng(0)
    graph_input = before.graph.input[0]
    shape = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    batch = {graph_input.name: rng.standard_normal(shape).astype(np.float32) * 4}
    reference = run_outputs(before, [batch])
    actual = run_outputs(to_proto(after_model), [batch])
    assert compare_outputs(reference, actual).sqnr_db == float("inf")
    for name, values in reference.items():
        np.testing.assert_array_equal(actual[name], values)

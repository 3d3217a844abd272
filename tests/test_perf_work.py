"""Work the passes no longer do on large graphs (issue 14's scale target, bench/bench_ir.py).

Speed is measured in bench/, never timed here: each test counts the work a speed fix removed (calls,
decodes, objects) so that the fix cannot silently come undone.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from qdq_compiler.ir import load_model
from qdq_compiler.ir.editing import is_topologically_sorted, topological_sort
from qdq_compiler.models.synthetic import build_chain_model
from qdq_compiler.pm import PassContext, parse_pipeline
from qdq_compiler.rewrite import RewritePattern, Rewriter, apply_patterns_greedily, driver


def _count_sorts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = ir.Graph.sort

    def counting(graph: ir.Graph) -> None:
        calls[0] += 1
        original(graph)

    monkeypatch.setattr(ir.Graph, "sort", counting)
    return calls


def test_passes_do_not_resort_a_graph_already_in_topological_order(monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(build_chain_model(60))
    ctx = PassContext()
    for pass_ in parse_pipeline("infer-shapes"):
        pass_.run(model, ctx)
    assert is_topologically_sorted(model.graph)
    sorts = _count_sorts(monkeypatch)
    for pass_ in parse_pipeline("fold-constants,place-qdq"):
        pass_.run(model, ctx)
    assert sorts[0] == 0
    assert is_topologically_sorted(model.graph)


def test_topological_sort_still_sorts_an_unsorted_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) {
        y = Relu(b)
        a = Relu(x)
        b = Neg(a)
    }"""
    model = load_model(onnx.parser.parse_model(text))
    assert not is_topologically_sorted(model.graph)
    sorts = _count_sorts(monkeypatch)
    topological_sort(model.graph)
    assert sorts[0] == 1
    assert [node.op_type for node in model.graph] == ["Relu", "Neg", "Relu"]
    assert is_topologically_sorted(model.graph)


def test_the_rewrite_driver_visits_only_nodes_a_pattern_is_anchored_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = [f"n{i} = Neg({'x' if i == 0 else f'n{i - 1}'})" for i in range(40)]
    lines.append("y = Identity(n39)")
    text = '<ir_version: 8, opset_import: ["" : 17]>\ng (float[2] x) => (float[2] y) {\n'
    model = load_model(onnx.parser.parse_model(text + "\n".join(lines) + "\n}"))

    class DropIdentity(RewritePattern):
        anchor_op = "Identity"

        def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
            rewriter.replace_value(node.outputs[0], node.inputs[0])
            rewriter.erase(node)
            return True

    pushed: list[str] = []
    original = driver._Worklist.push

    def counting(self: driver._Worklist, node: ir.Node) -> None:
        pushed.append(node.op_type)
        original(self, node)

    monkeypatch.setattr(driver._Worklist, "push", counting)
    rewriter = apply_patterns_greedily(model.graph, [DropIdentity()])
    assert rewriter.modified and [node.op_type for node in model.graph] == ["Neg"] * 40
    assert model.graph.outputs[0].name == "y"
    # the one Identity, then the node its rewrite touched (the last Neg) and that node's producer; not
    # the 40 Negs up front
    assert pushed == ["Identity", "Neg", "Neg"]


def _bias_model(weight_scale: list[float], act_scale: float = 0.05, bias: float = 1.0) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(INT8 weight -> DQ, float bias) -> y."""
    from onnx import TensorProto, helper, numpy_helper

    channels = len(weight_scale)
    inits = [
        numpy_helper.from_array(np.array(act_scale, np.float32), "x_s"),
        numpy_helper.from_array(np.array(0, np.int8), "x_z"),
        numpy_helper.from_array(np.ones((channels, 4, 3, 3), np.int8), "wq"),
        numpy_helper.from_array(np.asarray(weight_scale, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(channels, np.int8), "wz"),
        numpy_helper.from_array(np.full(channels, bias, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["xd", "w", "b"], ["y"], name="layer", pads=[1] * 4),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "bias", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_lint_checks_biases_per_channel_only_when_the_bound_does_not_clear_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qdq_compiler.targets.lint import lint_model

    per_channel = [0]
    broadcast = np.broadcast_arrays

    def counting(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        per_channel[0] += 1
        return broadcast(*arrays)

    def no_traversal(graph: ir.Graph) -> None:
        raise AssertionError("onnx-ir's all_nodes() generator chain")

    monkeypatch.setattr(np, "broadcast_arrays", counting)
    monkeypatch.setattr(ir.Graph, "all_nodes", no_traversal)
    # 1.0 / (0.05 * 1e-8) = 2e9 < 2**31 - 1: fits, cleared by the bound without a per-channel check
    assert lint_model(load_model(_bias_model([0.01, 1e-8]))) == []
    assert per_channel[0] == 0
    found = [v for v in lint_model(load_model(_bias_model([0.01, 1e-12]))) if v.rule == "bias-overflow"]
    assert [(v.node, "channel 1" in v.message) for v in found] == [("layer", True)]
    assert per_channel[0] == 1


def test_all_nodes_lists_subgraph_nodes_in_onnx_ir_order() -> None:
    from onnx import TensorProto, helper

    from qdq_compiler.ir.analysis import all_nodes

    def branch(name: str, op: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2])
        nodes = [helper.make_node(op, ["x"], [f"{name}_mid"], name=f"{name}_a")]
        nodes.append(helper.make_node("Relu", [f"{name}_mid"], [f"{name}_out"], name=f"{name}_b"))
        return helper.make_graph(nodes, name, [], [out])

    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], name="max", keepdims=0),
        helper.make_node("Cast", ["m"], ["c"], name="cast", to=TensorProto.BOOL),
        helper.make_node(
            "If", ["c"], ["i"], name="if", then_branch=branch("t", "Neg"), else_branch=branch("e", "Abs")
        ),
        helper.make_node("Relu", ["i"], ["y"], name="last"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    model = load_model(
        helper.make_model(
            helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
        )
    )
    names = [node.name for node in all_nodes(model.graph)]
    assert names == [node.name for node in model.graph.all_nodes()]
    assert names == ["max", "cast", "if", "e_a", "e_b", "t_a", "t_b", "last"]


def test_cast_scale_looks_for_underflow_only_when_the_type_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    from qdq_compiler.ir.qdq import cast_scale

    searches = [0]
    any_ = np.any

    def counting(array: np.ndarray) -> bool:
        searches[0] += 1
        return bool(any_(array))

    monkeypatch.setattr(np, "any", counting)
    same = cast_scale(np.float32(0.01), np.float32)
    assert same.dtype == np.float32 and float(same) == float(np.float32(0.01)) and searches[0] == 0
    tiny = cast_scale(np.array([1e-9, 0.5]), np.float16)
    assert searches[0] == 1
    assert tiny.dtype == np.float16 and tiny[0] == np.finfo(np.float16).smallest_subnormal and tiny[1] == 0.5


def _reference_sweeps(weights: list[np.ndarray], biases: list[np.ndarray], sweeps: int, max_scale: float):
    """Equalisation of a Conv chain as first written: float64 copies of both weights per pair step."""
    weights, biases = list(weights), list(biases)
    for _ in range(sweeps):
        for k in range(len(weights) - 1):
            w1, w2 = weights[k].astype(np.float64), weights[k + 1].astype(np.float64)
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            r2 = np.abs(w2).max(axis=(0, 2, 3))
            scale = np.ones(w1.shape[0])
            usable = (r1 > 0) & (r2 > 0)
            scale[usable] = np.sqrt(r1[usable] / r2[usable])
            scale = np.clip(scale, 1.0 / max_scale, max_scale)
            weights[k] = (w1 / scale.reshape(-1, 1, 1, 1)).astype(np.float32)
            weights[k + 1] = (w2 * scale.reshape(1, -1, 1, 1)).astype(np.float32)
            biases[k] = (biases[k].astype(np.float64) / scale).astype(np.float32)
    return weights, biases


def test_equalize_reads_each_pairs_group_once_and_keeps_the_float64_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pair step reads the second conv's group once per pair, not once per sweep, and rounds the
    float64 products back to float32 exactly as float64 copies of the weights would."""
    from qdq_compiler.models.synthetic import build_scale_model
    from qdq_compiler.passes import equalize

    model = load_model(build_scale_model("chain", 8))  # four Conv/Relu pairs: three Conv pairs
    convs = [node for node in model.graph if node.op_type == "Conv"]
    weights = [node.inputs[1].const_value.numpy().copy() for node in convs]
    biases = [node.inputs[2].const_value.numpy().copy() for node in convs]
    group_reads = [0]
    original = equalize.attribute_value

    def counting(node: ir.Node, name: str, default: object = None) -> object:
        group_reads[0] += name == "group"
        return original(node, name, default)

    monkeypatch.setattr(equalize, "attribute_value", counting)
    (pass_,) = parse_pipeline("equalize{iterations=5,tolerance=0}")
    result = pass_.run(model, PassContext())
    assert result.statistics["num-pairs"] == 3 and result.statistics["num-sweeps"] == 5
    assert group_reads[0] == 3  # once per pair; 15 (pairs x sweeps) before
    assert "converged" not in result.statistics  # tolerance 0: never met by these random weights
    expected_w, expected_b = _reference_sweeps(weights, biases, 5, 1e4)
    for node, w, b in zip(convs, expected_w, expected_b, strict=True):
        np.testing.assert_array_equal(node.inputs[1].const_value.numpy(), w)
        np.testing.assert_array_equal(node.inputs[2].const_value.numpy(), b)


def test_equalize_reports_convergence() -> None:
    from qdq_compiler.models.synthetic import build_scale_model

    model = load_model(build_scale_model("chain", 8))
    (pass_,) = parse_pipeline("equalize{iterations=50,tolerance=0.5}")
    statistics = pass_.run(model, PassContext()).statistics
    assert statistics["converged"] == 1 and statistics["num-sweeps"] < 50


def _sequential_equalize(model: ir.Model, iterations: int, tolerance: float) -> int:
    """Sweeps of one pair step at a time (the pass before its waves); the number of sweeps run."""
    from qdq_compiler.passes import equalize

    rewriter = Rewriter(model.graph)
    pairs = [pair for node in model.graph if (pair := equalize.match_pair(node, rewriter)) is not None]
    weights = equalize.WorkingWeights()
    sweeps = 0
    while sweeps < iterations:
        sweeps += 1
        if max(equalize.equalize_pair(pair, rewriter, 1e4, weights) for pair in pairs) <= tolerance:
            break
    weights.write(rewriter)
    rewriter.remove_unused_initializers()
    return sweeps


def test_equalize_stacks_the_steps_of_a_chain_into_waves(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain of 9 pairs over 40 sweeps: the steps of several sweeps run as one numpy computation (fewer
    square roots than pair steps), stopping where one sweep at a time stops (the sweeps that ran ahead
    undone) with the same arrays bit for bit."""
    from qdq_compiler.models.synthetic import build_scale_model

    proto = build_scale_model("chain", 20)  # ten Conv/Relu pairs: nine Conv pairs
    expected = load_model(proto)
    sweeps = _sequential_equalize(expected, 40, 0.01)
    assert 3 < sweeps < 40  # converges, with sweeps to run ahead of it and to undo
    roots = [0]
    sqrt = np.sqrt

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        roots[0] += 1
        return sqrt(*args, **kwargs)

    monkeypatch.setattr(np, "sqrt", counting)
    model = load_model(proto)
    (pass_,) = parse_pipeline("equalize{iterations=40,tolerance=0.01}")
    statistics = pass_.run(model, PassContext()).statistics
    assert statistics["num-sweeps"] == sweeps and statistics["converged"] == 1
    assert roots[0] < 9 * sweeps / 2  # one per pair step (9 x sweeps) before
    got = {init.name: init.const_value.numpy() for init in model.graph.initializers.values()}
    want = {init.name: init.const_value.numpy() for init in expected.graph.initializers.values()}
    assert list(got) == list(want)  # the same initializers, in the same order
    for name, array in want.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def test_shape_inference_reads_no_value_info_for_initializers_and_infers_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """infer-shapes used to serialize a value_info entry per initializer (a third of its serialization on
    a 20k-node graph: one per weight); inference takes those types from the tensors, so the node outputs
    get the same types and shapes without them."""
    from qdq_compiler.ir.external import proto_for_inference, proto_for_tools

    model = load_model(build_chain_model(40))
    seen: list[onnx.ModelProto] = []
    original = onnx.shape_inference.infer_shapes

    def spying(proto: onnx.ModelProto, *args: object, **kwargs: object) -> onnx.ModelProto:
        seen.append(proto)
        return original(proto, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", spying)
    for pass_ in parse_pipeline("infer-shapes"):
        pass_.run(model, PassContext())
    initializers = set(model.graph.initializers)
    assert len(seen) == 1 and initializers
    assert not initializers & {info.name for info in seen[0].graph.value_info}

    def node_output_types(proto: onnx.ModelProto) -> dict[str, bytes]:
        inferred = original(proto, check_type=True, data_prop=True)
        return {
            i.name: i.type.SerializeToString()
            for i in inferred.graph.value_info
            if i.name not in initializers
        }

    lean, full = node_output_types(proto_for_inference(model)), node_output_types(proto_for_tools(model))
    assert lean == full and len(lean) == len(model.graph) - 1  # every node output but the graph output


def _every_attribute_kind_model() -> onnx.ModelProto:
    """Nodes with int, ints, float, floats, string, strings, tensor and graph attributes, an omitted
    optional input, a trailing unnamed output, a name and a doc string."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    branch = helper.make_graph(
        [helper.make_node("Identity", ["pooled"], ["branch_out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node(
            "MaxPool", ["x"], ["pooled"], name="pool", kernel_shape=[2, 2], strides=[1, 1], ceil_mode=0
        ),
        helper.make_node("Dropout", ["pooled"], ["dropped", ""], name="drop"),
        helper.make_node("Clip", ["dropped", "", "hi"], ["clipped"], doc_string="a doc string"),
        helper.make_node("LeakyRelu", ["clipped"], ["leaky"], alpha=0.25),
        helper.make_node("Resize", ["leaky", "", "scales"], ["resized"], mode="nearest"),
        helper.make_node("Constant", [], ["hi"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [6.0])),
        helper.make_node("Constant", [], ["scales"], value_floats=[1.0, 1.0, 2.0, 2.0]),
        helper.make_node("Constant", [], ["labels"], value_strings=["a", "b"]),
        helper.make_node(
            "Constant", [], ["flag"], value=helper.make_tensor("f", TensorProto.BOOL, [], [True])
        ),
        helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=branch),
    ]
    graph = helper.make_graph(nodes, "kinds", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_inference_serializes_plain_nodes_itself_and_writes_what_serde_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """proto_for_inference writes nodes whose attributes are ints and floats without onnx-ir's general
    node serializer (about twice its cost per node); every node it writes, plain or not, is the node serde
    writes, without the doc string (shape inference reads none)."""
    from onnx_ir import serde

    from qdq_compiler.ir import external

    model = ir.serde.deserialize_model(_every_attribute_kind_model())
    expected = []
    for node in model.graph:
        proto = onnx.NodeProto()
        serde.serialize_node_into(proto, node)
        proto.ClearField("doc_string")
        expected.append(proto.SerializeToString(deterministic=True))
    calls: list[str] = []
    original = serde.serialize_node_into

    def counting(*args: object, **kwargs: object) -> None:
        node = kwargs.get("from_", args[1] if len(args) > 1 else None)
        calls.append(getattr(node, "op_type", ""))
        original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(serde, "serialize_node_into", counting)
    written = external.proto_for_inference(model).graph.node
    assert [node.SerializeToString(deterministic=True) for node in written] == expected
    # only the If's branches (subgraphs go through serde whole) use the general serializer
    assert calls == ["Identity", "Identity"]
    inferred = onnx.shape_inference.infer_shapes(external.proto_for_inference(model), check_type=True)
    shapes = {info.name: info.type.tensor_type.shape for info in inferred.graph.value_info}
    assert [d.dim_value for d in shapes["leaky"].dim] == [1, 2, 3, 3] and len(shapes["resized"].dim) == 4


def test_equalize_stacks_each_weight_once_and_hands_over_each_rescaled_input_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweeps keep one stacked array per weight shape (rows gathered and scattered per wave), not
    three np.stack calls per wave and three WorkingWeights.set calls per pair step."""
    from qdq_compiler.models.synthetic import build_scale_model
    from qdq_compiler.passes import equalize

    model = load_model(build_scale_model("chain", 20))  # ten Conv/Relu pairs: nine Conv pairs
    stacks, sets = [0], [0]
    stack, set_ = np.stack, equalize.WorkingWeights.set

    def counting_stack(*args: object, **kwargs: object) -> np.ndarray:
        stacks[0] += 1
        return stack(*args, **kwargs)  # type: ignore[call-overload,no-any-return]

    def counting_set(self: equalize.WorkingWeights, *args: object, **kwargs: object) -> None:
        sets[0] += 1
        set_(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(np, "stack", counting_stack)
    monkeypatch.setattr(equalize.WorkingWeights, "set", counting_set)
    (pass_,) = parse_pipeline("equalize{iterations=8,tolerance=0}")
    statistics = pass_.run(model, PassContext()).statistics
    assert statistics["num-sweeps"] == 8
    assert stacks[0] == 2  # the weights (all 4x4x3x3) and the biases; 69 before (3 per wave)
    rescaled = [init for init in model.graph.initializers if init.endswith("_equalized")]
    assert sets[0] == len(rescaled) == 10 + 9  # every weight, the biases of the nine first convs


def test_percentile_parses_p_once_and_ranks_as_the_rational_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    """amax_percentile reads p as a decimal fraction once per p (not a Fraction per tensor) and its integer
    rank is ceil(p * n / 100) in rationals, for counts that make p * n / 100 land on and off an integer."""
    import math
    from fractions import Fraction

    from qdq_compiler.calib import methods
    from qdq_compiler.calib.histogram import TensorStats

    made = [0]
    fraction = methods.Fraction

    def counting(*args: object) -> Fraction:
        made[0] += 1
        return fraction(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(methods, "Fraction", counting)
    methods._decimal_ratio.cache_clear()
    rng = np.random.default_rng(0)
    for total in [1, 7, 1000, 10_000, 100_001, 123_456_789]:
        hist = np.zeros(64, dtype=np.int64)
        np.add.at(hist, rng.integers(0, 64, 50), 1)
        hist[rng.integers(0, 64)] += total
        stats = TensorStats.from_histogram(hist, 64.0, min_value=0.0, max_value=64.0)
        cumulative = np.cumsum(hist)
        for p in (99.9, 99.99, 50.0, 12.5, 100.0):
            rank = max(1, math.ceil(Fraction(repr(p)) * int(cumulative[-1]) / 100))
            index = min(int(np.searchsorted(cumulative, rank, side="left")), 63)
            assert methods.amax_percentile(stats, p) == min(float(index + 1), 64.0)
    assert made[0] == 5  # one per p; one per call (30) before


def test_merging_duplicate_initializers_reads_dtype_and_shape_only_where_bytes_repeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loaded initializers build a Shape at every read: canonicalize reads one only for initializers whose
    bytes another one has too, and still merges exactly those of equal dtype, shape and bytes."""
    from onnx import TensorProto, helper, numpy_helper

    from qdq_compiler.passes.canonicalize import merge_duplicate_initializers

    unique = [numpy_helper.from_array(np.full(2, i, np.float32), f"u{i}") for i in range(20)]
    same = np.array([7.0, 8.0], np.float32)
    inits = [
        *unique,
        numpy_helper.from_array(same, "a"),
        numpy_helper.from_array(same, "b"),  # a's bytes, dtype and shape: merged into a
        numpy_helper.from_array(same.reshape(1, 2), "c"),  # a's bytes, another shape: kept
    ]
    names = [init.name for init in inits]
    nodes = [helper.make_node("Add", ["x", name], [f"y{i}"]) for i, name in enumerate(names)]
    nodes.append(helper.make_node("Concat", [f"y{i}" for i in range(len(names))], ["y"], axis=0))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    reads = [0]
    shape = ir.serde.TensorProtoTensor.shape

    def counting(tensor: ir.serde.TensorProtoTensor) -> ir.Shape:
        reads[0] += 1
        return shape.fget(tensor)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(ir.serde.TensorProtoTensor, "shape", property(counting))
    assert merge_duplicate_initializers(Rewriter(model.graph)) == 1
    assert reads[0] == 3  # b, a (compared with b), c; 23 (one per initializer) before
    assert "b" not in model.graph.initializers and {"a", "c"} <= set(model.graph.initializers)
    users = {node.inputs[1].name for node in model.graph if node.op_type == "Add"}
    assert users == set(names) - {"b"}


def _concat_of_two_quantized(scale_a: float, scale_b: float) -> ir.Model:
    text = f"""<ir_version: 8, opset_import: ["" : 17]>
    g (float[1,2] x) => (float[2,2] y) {{
        sa = Constant <value = float {{{scale_a}}}> ()
        sb = Constant <value = float {{{scale_b}}}> ()
        zp = Constant <value = int8 {{0}}> ()
        a = Relu(x)
        b = Neg(x)
        qa = QuantizeLinear(a, sa, zp)
        da = DequantizeLinear(qa, sa, zp)
        qb = QuantizeLinear(b, sb, zp)
        db = DequantizeLinear(qb, sb, zp)
        y = Concat <axis = 0> (da, db)
    }}"""
    model = load_model(onnx.parser.parse_model(text))
    for pass_ in parse_pipeline("canonicalize"):
        pass_.run(model, PassContext())  # Constants -> initializers
    return model


def test_unify_scales_scans_names_only_when_it_sets_a_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """unify-scales builds its naming scope (a scan of every name in the graph) at its first edit: a graph
    whose groups already agree costs no scan; one with a scale to set still gets exactly one."""
    from qdq_compiler.ir import editing
    from qdq_compiler.ir.qdq import scale_of

    scans = [0]
    original = editing.NameScope.__init__

    def counting(self: editing.NameScope, graph: ir.Graph) -> None:
        scans[0] += 1
        original(self, graph)

    agreeing, differing = _concat_of_two_quantized(0.25, 0.25), _concat_of_two_quantized(0.125, 0.25)
    monkeypatch.setattr(editing.NameScope, "__init__", counting)
    (unify,) = parse_pipeline("unify-scales")
    assert unify.run(agreeing, PassContext()).statistics["num-scales-unified"] == 0
    assert scans[0] == 0  # 1 before
    assert unify.run(differing, PassContext()).statistics["num-scales-unified"] == 1
    assert scans[0] == 1
    scales = [scale_of(node) for node in differing.graph if node.op_type == "QuantizeLinear"]
    assert [float(np.asarray(scale)) for scale in scales] == [0.25, 0.25]


def test_fold_constants_evaluates_only_nodes_whose_inputs_are_all_constant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fold-constants tells a node with an activation input apart before looking at its attributes (for
    subgraphs) or trying to evaluate it: none of a Conv/Relu chain is tried, a constant Add is folded."""
    from qdq_compiler.passes import fold_constants

    model = load_model(build_chain_model(60))
    ctx = PassContext()
    for pass_ in parse_pipeline("canonicalize"):
        pass_.run(model, ctx)
    one = ir.Value(name="one", shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.FLOAT))
    one.const_value = ir.tensor(np.ones(1, np.float32), name="one")
    model.graph.register_initializer(one)
    last = list(model.graph)[-1]
    add = ir.Node("", "Add", [one, one], num_outputs=1, name="constant_add")
    model.graph.insert_before(last, add)
    user = ir.Node("", "Add", [last.inputs[0], add.outputs[0]], num_outputs=1, name="user")
    model.graph.insert_before(last, user)
    last.replace_input_with(0, user.outputs[0])
    tried: list[str] = []
    evaluate = fold_constants._evaluate

    def counting(node: ir.Node, opset: int) -> list[np.ndarray] | None:
        tried.append(node.name or "")
        return evaluate(node, opset)

    monkeypatch.setattr(fold_constants, "_evaluate", counting)
    (fold,) = parse_pipeline("fold-constants")
    assert fold.run(model, ctx).statistics["num-nodes-folded"] == 1
    assert "constant_add" not in {node.name for node in model.graph}
    assert tried == ["constant_add"]  # every node of the graph before


@pytest.mark.parametrize("shape", ["chain", "ladder", "fanin"])
def test_the_benchmarks_graphs_compile_to_the_float_models_numbers(shape: str) -> None:
    """The graphs bench_ir times, small: equalize (rewritten to stacked sweeps) keeps the float outputs,
    and the whole trt-int8 pipeline (leaner inserts, folds, decodes) stays close to them in onnxruntime
    (37 / 25 / 53 dB measured on held-out inputs)."""
    from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
    from qdq_compiler.ir import to_proto
    from qdq_compiler.models.synthetic import build_scale_model
    from qdq_compiler.pipelines import TRT_INT8
    from qdq_compiler.pm import PassManager

    proto = build_scale_model(shape, 200)
    name = proto.graph.input[0].name
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    feeds = [{name: rng.standard_normal(dims).astype(np.float32)} for _ in range(8)]
    output = proto.graph.output[0].name
    reference = run_outputs(proto, feeds[4:])[output]
    equalized = load_model(proto)
    PassManager("infer-shapes,equalize").run(equalized, PassContext())
    changed = run_outputs(to_proto(equalized), feeds[4:])[output]
    assert np.max(np.abs(changed - reference)) <= 1e-4 * np.max(np.abs(reference))
    compiled = load_model(proto)
    PassManager(TRT_INT8).run(compiled, PassContext(calibration_data=feeds[:4]))
    assert sqnr_db(reference, run_outputs(to_proto(compiled), feeds[4:])[output]) >= 20.0

"""The Rewriter and the greedy worklist driver: naming without rescans, listeners, convergence, errors.

Speed is measured in bench/, never timed here: these tests check the mechanisms that make the passes
linear (one name scan per pass, a worklist instead of sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from helpers import count_name_scans

from qdq_compiler.accuracy.numerics import run_outputs
from qdq_compiler.errors import PassFailure
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.ir.editing import NameScope
from qdq_compiler.models.synthetic import build_chain_model
from qdq_compiler.pipelines import TRT_INT8
from qdq_compiler.pm import Pass, PassContext, PassManager, PassResult, parse_pipeline
from qdq_compiler.rewrite import RewritePattern, Rewriter, apply_patterns_greedily


def _relu_chain(length: int, dangling: int = 0) -> ir.Model:
    """x -> Relu x `length` -> y, plus `dangling` Relus hanging off x that feed nothing."""
    lines = []
    prev = "x"
    for i in range(length):
        out = "y" if i == length - 1 else f"r{i}"
        lines.append(f"{out} = Relu({prev})")
        prev = out
    prev = "x"
    for i in range(dangling):
        lines.append(f"d{i} = Relu({prev})")
        prev = f"d{i}"
    text = '<ir_version: 8, opset_import: ["" : 17]>\ng (float[2, 3] x) => (float[2, 3] y) {\n'
    return load_model(onnx.parser.parse_model(text + "\n".join(lines) + "\n}"))


class _EraseUnused(RewritePattern):
    """Erase a Relu whose output nothing reads: on a dangling chain each erasure frees its producer."""

    anchor_op = "Relu"

    def __init__(self) -> None:
        self.attempts = 0

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        self.attempts += 1
        if node.outputs[0].uses() or node.outputs[0].is_graph_output():
            return rewriter.notify_match_failure(node, "output is used")
        rewriter.erase(node)
        return True


class _Swap(RewritePattern):
    """Rewrite `source` ops into `target` ops; two of these in opposite directions never settle."""

    def __init__(self, source: str, target: str) -> None:
        self.anchor_op = source
        self.target = target

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        rewriter.replace_op(node, self.target, list(node.inputs))
        return True


class _Recorder:
    """A RewriteListener that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def node_inserted(self, node: ir.Node) -> None:
        self.events.append(("inserted", node.op_type))

    def node_erased(self, node: ir.Node) -> None:
        self.events.append(("erased", node.op_type))

    def node_changed(self, node: ir.Node) -> None:
        self.events.append(("changed", node.name or node.op_type))


def test_worklist_follows_a_chain_of_newly_dead_nodes_in_one_run() -> None:
    # Only the last dangling Relu is dead at first; each erasure makes its producer dead. Sweeping in graph
    # order needs one sweep per node; the worklist requeues the producer and finishes in about 2 visits each.
    model = _relu_chain(length=2, dangling=40)
    pattern = _EraseUnused()
    rewriter = apply_patterns_greedily(model.graph, [pattern])
    assert rewriter.converged
    assert [node.name or node.op_type for node in model.graph] == ["Relu"] * 2
    assert len(model.graph) == 2
    assert pattern.attempts <= 2 * 42 + 2


def test_ping_pong_patterns_report_not_converged(caplog: pytest.LogCaptureFixture) -> None:
    model = _relu_chain(length=3)
    with caplog.at_level("WARNING", logger="qdqc"):  # an earlier CLI test may have raised the root level
        rewriter = apply_patterns_greedily(
            model.graph, [_Swap("Relu", "Sigmoid"), _Swap("Sigmoid", "Relu")], max_rewrites=50
        )
    assert not rewriter.converged
    assert "did not converge after 50 rewrites" in caplog.text


def test_converging_rewrite_keeps_the_numbers() -> None:
    model = _relu_chain(length=3)
    feeds = {"x": np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)}
    rewriter = apply_patterns_greedily(model.graph, [_Swap("Relu", "Sigmoid")])
    assert rewriter.converged and rewriter.modified
    assert [node.op_type for node in model.graph] == ["Sigmoid"] * 3
    expected = 1 / (1 + np.exp(-feeds["x"].astype(np.float64)))
    for _ in range(2):
        expected = 1 / (1 + np.exp(-expected))
    (actual,) = run_outputs(to_proto(model), [feeds]).values()
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_listeners_see_inserts_erases_and_changes() -> None:
    model = _relu_chain(length=2)
    first, second = list(model.graph)
    first.name, second.name = "first", "second"
    rewriter = Rewriter(model.graph)
    recorder = _Recorder()
    rewriter.listeners.append(recorder)
    new = rewriter.replace_op(first, "Sigmoid", list(first.inputs))
    assert new.name == "first" and new.outputs[0].name == "r0"
    assert recorder.events == [("inserted", "Sigmoid"), ("changed", "second"), ("erased", "Relu")]
    rewriter.set_attribute(second, ir.AttrFloat32("alpha", 0.5))
    assert recorder.events[-1] == ("changed", "second")


class _Explodes(RewritePattern):
    anchor_op = "Relu"

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        if node.name == "boom":
            raise ValueError("cannot rewrite this one")
        return False


class _ExplodingPass(Pass):
    name = "explode"
    summary = "Raise inside a pattern."

    @dataclass(frozen=True)
    class Options:
        pass

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        apply_patterns_greedily(model.graph, [_Explodes()])
        return PassResult(modified=False)


def test_error_inside_a_pattern_names_the_anchor_node() -> None:
    model = _relu_chain(length=3)
    list(model.graph)[1].name = "boom"
    with pytest.raises(PassFailure) as failure:
        PassManager([_ExplodingPass()]).run(model, stamp=False)
    assert failure.value.node == "boom"
    assert "at node 'boom'" in str(failure.value) and "cannot rewrite this one" in str(failure.value)


def test_match_failures_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    model = _relu_chain(length=2)
    list(model.graph)[0].name = "kept"
    with caplog.at_level("DEBUG", logger="qdqc"):
        apply_patterns_greedily(model.graph, [_EraseUnused()])
    assert "_EraseUnused did not apply at kept: output is used" in caplog.text


def test_place_qdq_scans_names_once_not_per_inserted_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(build_chain_model(100))
    ctx = PassContext()
    for pass_ in parse_pipeline("infer-shapes"):
        pass_.run(model, ctx)
    scans = count_name_scans(monkeypatch)
    (place,) = parse_pipeline("place-qdq")
    result = place.run(model, ctx)
    pairs = result.statistics["num-activation-qdq-inserted"] + result.statistics["num-weight-qdq-inserted"]
    assert pairs >= 40
    assert scans[0] == 1


def test_name_scope_numbers_many_equal_prefixes_without_rescanning() -> None:
    # Unnamed nodes of one op type get Relu_0, Relu_1, ...: each name costs O(1) probes, not O(n).
    model = _relu_chain(length=300)
    for node in model.graph:
        node.name = None
    list(model.graph)[5].name = "Relu_2"  # a taken name is skipped
    scope = NameScope(model.graph)
    probes = [0]

    class CountingSet(set):
        def __contains__(self, item: object) -> bool:
            probes[0] += 1
            return super().__contains__(item)

    scope._nodes = CountingSet(scope._nodes)
    names = [scope.numbered_node("Relu") for _ in range(299)]
    assert names[:4] == ["Relu_0", "Relu_1", "Relu_3", "Relu_4"] and len(set(names)) == 299
    assert probes[0] <= 299 + 2


def test_a_scope_scans_when_first_asked_and_keeps_the_names_its_rewriter_freed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass that names nothing scans nothing (calibrate, unify-scales and cleanup-qdq made a Rewriter
    each: a tenth of a second per scan at 20k nodes); a name its Rewriter freed before the first request
    stays taken, as when the scan came first."""
    model = _relu_chain(length=3)
    for index, node in enumerate(model.graph):
        node.name = f"relu{index}"
    scans = count_name_scans(monkeypatch)
    rewriter = Rewriter(model.graph)
    first = next(iter(model.graph))
    assert scans[0] == 0  # made, nothing named yet
    rewriter.set_name(first, "renamed")
    assert scans[0] == 1 and rewriter.names.node("relu0") == "relu0_1"
    assert rewriter.names.node("relu2") == "relu2_1" and scans[0] == 1


def test_canonicalize_names_nodes_through_one_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _relu_chain(length=50)
    for node in model.graph:
        node.name = None
    scans = count_name_scans(monkeypatch)
    (canonicalize,) = parse_pipeline("canonicalize")
    result = canonicalize.run(model, PassContext())
    assert result.statistics["num-nodes-named"] == 50
    assert [node.name for node in model.graph] == [f"Relu_{i}" for i in range(50)]
    assert scans[0] == 1


THREE_TWINS = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 1, 2, 2] x) => (float[1, 1, 2, 2] y, float[1, 1, 2, 2] z, float[1, 1, 2, 2] v)
  <float s = {0.1}, int8 zp = {0}, float[1, 1, 1, 1] w = {0.5}> {
   q1 = QuantizeLinear(x, s, zp)
   d1 = DequantizeLinear(q1, s, zp)
   q2 = QuantizeLinear(x, s, zp)
   d2 = DequantizeLinear(q2, s, zp)
   q3 = QuantizeLinear(x, s, zp)
   d3 = DequantizeLinear(q3, s, zp)
   y = Conv(d1, w)
   z = Conv(d2, w)
   v = Conv(d3, w)
}"""


def test_cleanup_qdq_counts_each_merged_twin_once_and_keeps_the_numbers() -> None:
    # Three equal Q->DQ pairs on x become one: 2 Qs and 2 DQs merged (the old hand loop counted each twin
    # once from either side and redirected uses back and forth).
    model = load_model(onnx.parser.parse_model(THREE_TWINS))
    feeds = {"x": np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 1, 2, 2)}
    before = run_outputs(to_proto(model), [feeds])
    (cleanup,) = parse_pipeline("cleanup-qdq")
    result = cleanup.run(model, PassContext())
    assert result.statistics["num-duplicates-merged"] == 4
    assert [node.op_type for node in model.graph] == ["QuantizeLinear", "DequantizeLinear"] + ["Conv"] * 3
    after = run_outputs(to_proto(model), [feeds])
    for name, expected in before.items():
        np.testing.assert_array_equal(after[name], expected)
    float_y = feeds["x"] * 0.5  # the float model: Conv by a 1x1 weight of 0.5
    np.testing.assert_allclose(after["y"], float_y, atol=0.1 * 0.5 / 2 + 1e-7)


def test_rewriter_set_scale_names_a_shared_scale_from_its_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three Q/DQ groups read one scale constant: the first two get new constants, named without a rescan;
    # the last is then the only reader and is updated in place.
    model = load_model(onnx.parser.parse_model(THREE_TWINS))
    scans = count_name_scans(monkeypatch)
    rewriter = Rewriter(model.graph)
    recorder = _Recorder()
    rewriter.listeners.append(recorder)
    quantizers = [node for node in model.graph if node.op_type == "QuantizeLinear"]
    for index, quantize in enumerate(quantizers):
        rewriter.set_scale(quantize, np.float32(0.25 * (index + 1)))
    assert scans[0] == 1
    assert [q.inputs[1].name for q in quantizers] == ["x_scale", "x_scale_1", "s"]
    assert len([e for e in recorder.events if e[0] == "changed"]) == 6  # each Q and its DQ
    feeds = {"x": np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 1, 2, 2)}
    outputs = run_outputs(to_proto(model), [feeds])
    np.testing.assert_allclose(outputs["v"], feeds["x"] * 0.5, atol=0.75 * 0.5 / 2 + 1e-7)


def _uint8_qdq_chain(pairs: int) -> str:
    """x -> [Q/DQ uint8 (zero-point 0: an implied clamp at 0) -> Neg] x pairs -> y."""
    lines, prev = [], "x"
    for i in range(pairs):
        out = "y" if i == pairs - 1 else f"n{i}"
        lines += [f"q{i} = QuantizeLinear({prev}, s, zp)", f"d{i} = DequantizeLinear(q{i}, s, zp)"]
        lines.append(f"{out} = Neg(d{i})")
        prev = out
    return (
        '<ir_version: 8, opset_import: ["" : 17]>\n'
        "g (float[2, 3] x) => (float[2, 3] y) <float s = {0.02}, uint8 zp = {0}> {\n"
        + "\n".join(lines)
        + "\n}"
    )


def test_strip_qdq_scans_names_once_for_all_restored_clamps(monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(onnx.parser.parse_model(_uint8_qdq_chain(8)))
    scans = count_name_scans(monkeypatch)
    (strip,) = parse_pipeline("strip-qdq")
    result = strip.run(model, PassContext())
    assert result.statistics["num-clamps-restored"] >= 7
    assert scans[0] == 1
    feeds = {"x": np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)}
    expected = feeds["x"]
    for _ in range(8):
        expected = -np.maximum(expected, 0)  # the float model the Q/DQ clamps stood for
    (actual,) = run_outputs(to_proto(model), [feeds]).values()
    np.testing.assert_array_equal(actual, expected)


def test_calibrate_and_unify_scales_scan_names_once_when_scales_are_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scale constant shared by several Qs (canonicalize merges the equal placeholders) cannot be updated
    in place: each Q gets a new constant, named from the pass's one Rewriter scope, not a rescan per Q."""
    from qdq_compiler.calib.histogram import DEFAULT_NUM_BINS, TensorStats
    from qdq_compiler.ir.qdq import scale_of
    from qdq_compiler.quant.activation_scales import activation_quantizers, quantized_tensor_name

    model = load_model(build_chain_model(60))
    ctx = PassContext()
    for pass_ in parse_pipeline("infer-shapes,place-qdq,canonicalize"):
        pass_.run(model, ctx)
    quantizers = activation_quantizers(model.graph)
    assert len(quantizers) >= 20 and len({id(q.inputs[1]) for q in quantizers}) == 1  # one shared scale
    sample = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    for k, quantize in enumerate(quantizers):
        stats = TensorStats(DEFAULT_NUM_BINS)
        stats.update(sample * np.float32(1 + k))
        ctx.calibration_stats[quantized_tensor_name(quantize)] = stats
    scans = count_name_scans(monkeypatch)
    (calibrate,) = parse_pipeline("calibrate{method=max}")
    assert calibrate.run(model, ctx).statistics["num-scales-set"] == len(quantizers)
    assert scans[0] <= 1
    for quantize in quantizers:
        expected = ctx.calibration_stats[quantized_tensor_name(quantize)].absmax / 127
        assert float(scale_of(quantize)) == pytest.approx(expected, rel=1e-6)
    assert len({id(q.inputs[1]) for q in quantizers}) == len(quantizers)


def test_trt_int8_decodes_a_loaded_weight_only_where_it_needs_the_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loaded initializer is decoded from its proto at every read: asking whether a value is constant
    (place-qdq's decisions, calibrate's choice of activation Qs) must not read it. Left: place-qdq's amax,
    fold-scales' INT8 codes, the linter's bias check, once each per layer."""
    from qdq_compiler.calib.histogram import DEFAULT_NUM_BINS, TensorStats

    proto = build_chain_model(60)
    model = load_model(proto)
    convs = sum(1 for node in model.graph if node.op_type == "Conv")
    stats = TensorStats(DEFAULT_NUM_BINS)
    stats.update(np.random.default_rng(0).standard_normal(256).astype(np.float32))
    names = [i.name for i in proto.graph.input] + [o for node in proto.graph.node for o in node.output]
    decoded = [0]
    decode = ir.TensorProtoTensor.numpy

    def counting(self):
        decoded[0] += 1
        return decode(self)

    monkeypatch.setattr(ir.TensorProtoTensor, "numpy", counting)
    from qdq_compiler.ir import editing as editing_module
    from qdq_compiler.ir import tensor_data

    def counting_raw(tensor):  # the raw-byte decode of a loaded tensor (numpy() for other tensors)
        if type(tensor) is ir.TensorProtoTensor:
            decoded[0] += 1
            return decode(tensor)
        return tensor_data.tensor_array(tensor)

    monkeypatch.setattr(editing_module, "tensor_array", counting_raw)
    without_data = TRT_INT8.replace("equalize-channels,", "").replace("calibrate", "calibrate{method=max}")
    PassManager(without_data).run(model, PassContext(calibration_stats=dict.fromkeys(names, stats)))
    assert convs >= 20 and 0 < decoded[0] <= 3 * convs

"""Work the passes no longer do on large graphs (issue 14's scale target, bench/bench_ir.py).

Speed is measured in bench/, never timed here: each test counts the work a speed fix removed (calls,
decodes, objects) so that the fix cannot silently come undone.
"""

from __future__ import annotations

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

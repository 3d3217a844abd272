"""Extension points: plugin files, graphsurgeon scripts as passes, the rewrite driver."""

from __future__ import annotations

import onnx
import pytest

from qdq_compiler.errors import PipelineError
from qdq_compiler.ir import load_model, op_counts
from qdq_compiler.pm import PassContext, PassManager, get_pass, load_plugin
from qdq_compiler.pm.graphsurgeon import graphsurgeon_pass

TINY = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4] x) => (float[1, 4] y) { a = Neg(x)  y = Neg(a) }"""

PLUGIN = '''
from dataclasses import dataclass
from qdq_compiler.pm import Pass, PassResult, register_pass


@register_pass
class CountNegs(Pass):
    name = "count-negs-plugin"
    summary = "Counts Neg nodes (plugin test)."

    @dataclass(frozen=True)
    class Options:
        label: str = "negs"

    def run(self, model, ctx):
        result = PassResult(modified=False)
        result.statistics[self.options.label] = sum(1 for n in model.graph if n.op_type == "Neg")
        return result
'''


def test_plugin_file_registers_a_pass(tmp_path) -> None:
    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN)
    load_plugin(str(path))
    results = PassManager("count-negs-plugin{label=n}").run(load_model(onnx.parser.parse_model(TINY)))
    assert results[0].statistics["n"] == 2
    assert get_pass("count-negs-plugin").summary.startswith("Counts")


def test_missing_plugin_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(PipelineError, match="not found"):
        load_plugin(str(tmp_path / "nope.py"))
    with pytest.raises(PipelineError, match="cannot import"):
        load_plugin("no_such_module_for_qdqc")


def test_graphsurgeon_script_runs_as_a_pass() -> None:
    @graphsurgeon_pass("drop-double-neg-test", "Removes Neg(Neg(x)) with graphsurgeon (test).")
    def drop_double_neg(graph) -> None:
        negs = [node for node in graph.nodes if node.op == "Neg"]
        if len(negs) != 2:
            return
        first, second = negs
        second.op = "Abs"  # -(-x) == x; Abs keeps the output tensor and checks the rewrite ran
        second.inputs = [first.inputs[0]]

    model = load_model(onnx.parser.parse_model(TINY))
    result = drop_double_neg().run(model, PassContext())
    assert result.modified and op_counts(model.graph)["Neg"] == 0 and op_counts(model.graph)["Abs"] == 1
    assert drop_double_neg().run(model, PassContext()).modified is False

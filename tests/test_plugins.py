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

PLUGIN = """
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
"""


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


CLI_PLUGIN = """
from qdq_compiler.pm import PassResult
from qdq_compiler.pm.base import function_pass
from qdq_compiler.pm.registry import register_pass


@register_pass
@function_pass("mark-model-plugin", "Records in the model's metadata that it ran (plugin test).")
def mark_model(model, ctx):
    if model.metadata_props.get("plugin.ran") == "yes":
        return PassResult(modified=False)
    model.metadata_props["plugin.ran"] = "yes"
    return PassResult(modified=True)
"""


def test_compile_loads_a_plugin_before_parsing_the_pipeline(tmp_path, capsys) -> None:
    """`compile --load-pass-plugin p.py --pipeline "my-pass,trt-int8"` failed with 'unknown pass'."""
    import numpy as np

    from qdq_compiler.accuracy import compare_outputs
    from qdq_compiler.accuracy.numerics import run_outputs
    from qdq_compiler.cli import main
    from qdq_compiler.examples import image_like_batch
    from qdq_compiler.models import TEST_MODELS

    plugin = tmp_path / "mark_plugin.py"
    plugin.write_text(CLI_PLUGIN)
    model_path, calib, out = tmp_path / "m.onnx", tmp_path / "calib.npy", tmp_path / "out.onnx"
    onnx.save_model(TEST_MODELS["yolov7_tiny"](), model_path)
    np.save(calib, image_like_batch(4, 160))
    args = ["-q", "compile", str(model_path), "-o", str(out), "--calib", str(calib), "--no-check"]
    assert main([*args, "--load-pass-plugin", str(plugin), "--pipeline", "mark-model-plugin,trt-int8"]) == 0
    compiled = onnx.load(str(out))
    metadata = {p.key: p.value for p in compiled.metadata_props}
    assert metadata["plugin.ran"] == "yes"
    assert metadata["qdq_compiler.pipeline"].startswith("mark-model-plugin,upgrade-opset,")
    float_proto = onnx.load(str(model_path))
    batches = [{float_proto.graph.input[0].name: np.load(calib)[:1]}]
    assert compare_outputs(run_outputs(float_proto, batches), run_outputs(compiled, batches)).sqnr_db > 10.0


def test_the_same_plugin_file_loaded_twice_is_a_no_op(tmp_path) -> None:
    path = tmp_path / "twice_plugin.py"
    path.write_text(PLUGIN.replace("count-negs-plugin", "count-negs-twice"))
    load_plugin(str(path))
    first = get_pass("count-negs-twice")
    load_plugin(str(path))
    load_plugin(str(tmp_path / "." / "twice_plugin.py"))  # the same file by another spelling
    assert get_pass("count-negs-twice") is first


def test_opt_accepts_the_same_plugin_twice(tmp_path) -> None:
    from qdq_compiler.cli import main

    path = tmp_path / "opt_twice_plugin.py"
    path.write_text(PLUGIN.replace("count-negs-plugin", "count-negs-opt-twice"))
    model = tmp_path / "tiny.onnx"
    onnx.save_model(onnx.parser.parse_model(TINY), model)
    plugin = ["--load-pass-plugin", str(path)]
    assert (
        main(
            [
                "-q",
                "opt",
                str(model),
                "-o",
                str(tmp_path / "o.onnx"),
                *plugin,
                *plugin,
                "--pipeline",
                "count-negs-opt-twice",
            ]
        )
        == 0
    )


def test_a_plugin_reusing_a_builtin_name_is_named_as_the_newcomer(tmp_path) -> None:
    """Built-ins load first, so the built-in owns the name and the plugin is the one refused."""
    import subprocess
    import sys

    path = tmp_path / "clash_plugin.py"
    path.write_text(PLUGIN.replace("count-negs-plugin", "canonicalize"))
    done = subprocess.run(
        [sys.executable, "-m", "qdq_compiler", "passes", "--load-pass-plugin", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "qdqc: error: pass plugin " + str(path) + " failed to load: PipelineError: pass 'canonicalize' is "
        "already registered by qdq_compiler.passes.canonicalize; qdqc_plugin_clash_plugin cannot register it "
        "again"
    )

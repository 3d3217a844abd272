"""Docs that code keeps honest: the pass-writing tutorial runs as written; docs/passes.md is current."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import onnx

import qdq_compiler.pm.registry as registry
from qdq_compiler.accuracy.numerics import run_outputs
from qdq_compiler.cli import main
from qdq_compiler.docs_passes import COMMAND, render
from qdq_compiler.ir import load_model, op_counts, to_proto
from qdq_compiler.pm import PassManager, get_pass, load_passes

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def test_the_tutorial_runs_and_its_passes_keep_the_numbers(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    load_passes()  # built-ins and installed plugins first, then a copy that forgets the tutorial's passes
    monkeypatch.setattr(registry, "_PASSES", dict(registry._PASSES))
    blocks = python_blocks((DOCS / "writing-passes.md").read_text())
    assert len(blocks) >= 5, "docs/writing-passes.md lost its code"
    tutorial = types.ModuleType("writing_passes_tutorial")  # a module, as a user's my_passes.py would be
    monkeypatch.setitem(sys.modules, tutorial.__name__, tutorial)
    for index, block in enumerate(blocks):
        code = compile(block, f"docs/writing-passes.md (python block {index + 1})", "exec")
        exec(code, tutorial.__dict__)
    assert get_pass("max-min-to-clip").__module__ == "writing_passes_tutorial"
    assert get_pass("drop-mul-by-one").Options().tolerance == 0.0

    # The tutorial's passes on a model of our own: bounds in the other order, one pair it must keep.
    model = load_model(
        onnx.parser.parse_model(
            """<ir_version: 8, opset_import: ["" : 17]>
            g (float[1, 8] x) => (float[1, 8] y, float[1, 8] z)
              <float lo = {-1.5}, float hi = {2.0}, float one = {1.0}, float big = {3.0}> {
                a = Max(x, lo)
                b = Min(hi, a)
                y = Mul(one, b)
                c = Max(x, big)
                z = Min(c, hi)
            }"""
        )
    )
    before = to_proto(model)
    PassManager("max-min-to-clip,drop-mul-by-one").run(model)
    assert op_counts(model.graph) == {"Clip": 1, "Max": 1, "Min": 1}  # 3 > 2: z stays
    batch = {"x": np.linspace(-4, 4, 8, dtype=np.float32).reshape(1, 8)}
    reference, actual = run_outputs(before, [batch]), run_outputs(to_proto(model), [batch])
    for name in ("y", "z"):
        np.testing.assert_array_equal(actual[name], reference[name])


def test_passes_doc_is_generated_from_the_registry() -> None:
    current = (DOCS / "passes.md").read_text()
    assert current == render(), f"docs/passes.md is out of date: run `{COMMAND}`"


def test_passes_doc_lists_every_builtin_pass_and_no_plugin() -> None:
    page = render()
    for name in ("calibrate", "fold-bn", "place-qdq", "verify-trt"):
        assert f"\n## {name}\n" in page
    assert "\n## clip-to-relu\n" not in page  # the installed example plugin documents itself
    assert "| `method` | `str` | `percentile` |" in page


def test_the_tutorials_first_block_is_a_plugin_file_for_qdqc_opt(tmp_path, monkeypatch) -> None:
    """Saved as my_passes.py, the pattern pass loads with --load-pass-plugin and runs in a pipeline."""
    load_passes()
    monkeypatch.setattr(registry, "_PASSES", dict(registry._PASSES))
    monkeypatch.setattr(registry, "_PLUGIN_FILES", set(registry._PLUGIN_FILES))
    plugin = tmp_path / "my_passes.py"
    plugin.write_text(python_blocks((DOCS / "writing-passes.md").read_text())[0])
    source = tmp_path / "model.onnx"
    onnx.save_model(
        onnx.parser.parse_model(
            """<ir_version: 8, opset_import: ["" : 17]>
            g (float[1, 8] x) => (float[1, 8] y) <float lo = {0.0}, float hi = {6.0}> {
                a = Max(x, lo)
                b = Min(a, hi)
                y = Neg(b)
            }"""
        ),
        source,
    )
    out = tmp_path / "out.onnx"
    argv = ["opt", str(source), "--load-pass-plugin", str(plugin), "--pipeline", "max-min-to-clip"]
    assert main([*argv, "-o", str(out)]) == 0
    rewritten = onnx.load(out)
    assert [node.op_type for node in rewritten.graph.node] == ["Clip", "Neg"]
    batch = {"x": np.linspace(-8, 8, 8, dtype=np.float32).reshape(1, 8)}
    expected = run_outputs(onnx.load(source), [batch])["y"]
    np.testing.assert_array_equal(run_outputs(rewritten, [batch])["y"], expected)

"""CHECK-style golden cases catch deliberate changes with a readable message, and the case file format
(`# -----` sections, `# BUILD:`, --update-golden) behaves as documented."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from qdq_compiler.golden import GoldenCase, read_cases
from qdq_compiler.ir import bypass_node, dump
from qdq_compiler.ir.qdq import scale_of, set_scale
from qdq_compiler.pm import PassManager

GOLDEN_ROOT = Path(__file__).resolve().parent.parent / "golden"


def golden_cases(relative: str) -> list[GoldenCase]:
    return read_cases(GOLDEN_ROOT / relative, shown_as=f"golden/{relative}")


def compiled(case: GoldenCase) -> ir.Model:
    model = case.load_input()
    PassManager(case.pipeline).run(model, case.context(), stamp=False)
    return model


def node_named(model: ir.Model, name: str) -> ir.Node:
    (node,) = [n for n in model.graph if n.name == name]
    return node


def failures(cases: list[GoldenCase], text: str) -> list[str]:
    return [message for case in cases if (message := case.verify(text)) is not None]


def test_dropping_one_qdq_pair_fails_the_place_qdq_checks() -> None:
    cases = golden_cases("place-qdq/yolov7_tiny.py")
    model = compiled(cases[0])
    assert failures(cases, dump(model)) == []
    # The deliberate change: Conv backbone.11 loses the Q/DQ pair on its input.
    bypass_node(node_named(model, "backbone.10.act_DQ"))
    bypass_node(node_named(model, "backbone.10.act_Q"))
    (message,) = failures(cases, dump(model))
    first_line = message.splitlines()[0]
    assert re.fullmatch(
        r"golden/place-qdq/yolov7_tiny\.py:\d+: error: CHECK: expected pattern not found in the dump of "
        r"place-qdq/yolov7_tiny#2",
        first_line,
    ), first_line
    assert "# CHECK: = Conv(%{{[^,]+}}_dequantized, %backbone.11.conv.weight_folded_dequantized," in message
    # The dump lines where the search started, and the line that nearly matched: the float input.
    assert "starting at:" in message
    assert re.search(r">\s+\d+ \| %backbone\.11\.bn: \S+ = Conv\(%backbone\.10\.act, ", message), message
    # The line number points at the directive in the case file.
    line = int(first_line.split(":")[1])
    source_line = (GOLDEN_ROOT / "place-qdq/yolov7_tiny.py").read_text().splitlines()[line - 1]
    assert "%backbone.11.conv.weight_folded_dequantized" in source_line


def test_changing_a_concat_scale_fails_the_unify_scales_checks() -> None:
    cases = golden_cases("unify-scales/yolov7_tiny.py")
    model = compiled(cases[0])
    assert failures(cases, dump(model)) == []
    quantize = node_named(model, "head.64.concat_Q")
    shared = scale_of(quantize)
    assert shared is not None
    # The deliberate change: Concat head.64 gets its own scale instead of its inputs' one.
    set_scale(quantize, np.float32(shared * 2))
    (message,) = failures(cases, dump(model))
    assert message.startswith("golden/unify-scales/yolov7_tiny.py:")
    assert "error: CHECK: expected pattern not found" in message
    assert "# CHECK: const %head.64.concat_scale = float<scalar> [[head_64]]" in message
    assert f"with [[head_64]] = '{float(shared):g}'" in message
    assert re.search(r"nearest line:\n  >\s+\d+ \| const %head\.64\.concat_scale = float<scalar> ", message)


def test_float_head_conv_getting_qdq_fails_the_check_not() -> None:
    cases = golden_cases("place-qdq/yolov7_tiny.py")
    text = dump(compiled(cases[0]))
    changed = text.replace(
        "%detect.1.conv: float[1,24,4,4] = Conv(%head.75.act,",
        "%head.75.act_quantized: int8[1,64,4,4] = QuantizeLinear(%head.75.act, %s, %z)\n"
        "%detect.1.conv: float[1,24,4,4] = Conv(%head.75.act,",
    )
    assert changed != text
    (message,) = failures(cases, changed)
    assert "error: CHECK-NOT: excluded pattern found in the dump of place-qdq/yolov7_tiny#3" in message
    assert "# CHECK-NOT: QuantizeLinear" in message
    assert re.search(r">\s+\d+ \| %head\.75\.act_quantized: int8", message)


CASE_FILE = """\
# RUN: canonicalize
# CHECK: Relu(%x)
<ir_version: 8, opset_import: ["" : 17]>
g (float[1] x) => (float[1] y) {
   i = Identity(x)
   y = Relu(i)
}
# -----
# RUN: canonicalize
# CHECK-NOT: Identity
# CHECK: = Sigmoid(
<ir_version: 8, opset_import: ["" : 17]>
g (float[1] x) => (float[1] y) {
   i = Identity(x)
   y = Relu(i)
}
"""


def test_sections_have_their_own_input_and_checks(tmp_path: Path) -> None:
    source = tmp_path / "two.onnxtxt"
    source.write_text(CASE_FILE)
    first, second = read_cases(source, shown_as="two.onnxtxt")
    assert (first.case_id, second.case_id) == (f"{tmp_path.name}/two#1", f"{tmp_path.name}/two#2")
    assert first.verify(first.run()) is None
    message = second.verify(second.run())
    assert message is not None and message.startswith(
        "two.onnxtxt:11: error: CHECK: expected pattern not found"
    )


def test_update_golden_runs_checks_and_writes_no_snapshot(tmp_path: Path) -> None:
    source = tmp_path / "two.onnxtxt"
    source.write_text(CASE_FILE)
    first, second = read_cases(source)
    assert first.verify(first.run(), update=True) is None
    assert second.verify(second.run(), update=True) is not None  # a failing check still fails
    assert not (tmp_path / "two.expected").exists()


def test_update_golden_rewrites_a_snapshot_case(tmp_path: Path) -> None:
    source = tmp_path / "one.onnxtxt"
    source.write_text(CASE_FILE.split("# -----")[0].replace("# CHECK: Relu(%x)\n", ""))
    (case,) = read_cases(source)
    assert "missing" in (case.verify(case.run()) or "")
    assert case.verify(case.run(), update=True) is None
    assert case.verify(case.run()) is None
    assert "= Relu(%x)" in (tmp_path / "one.expected").read_text()


def test_builder_sections_name_their_builder(tmp_path: Path) -> None:
    source = tmp_path / "built.py"
    source.write_text(
        "import onnx\n\n"
        "def relu():\n"
        '    return onnx.parser.parse_model(\'<ir_version: 8, opset_import: ["" : 17]> '
        "g (float[1] x) => (float[1] y) { y = Relu(x) }')\n\n"
        "# RUN: canonicalize\n# BUILD: relu\n# CHECK: = Relu(%x)\n"
        "# -----\n# RUN: canonicalize\n# BUILD: missing\n# CHECK: Relu\n"
    )
    good, bad = read_cases(source)
    assert good.verify(good.run()) is None
    with pytest.raises(ValueError, match=r"no builder function missing\(\)"):
        bad.run()


def test_a_section_without_checks_in_a_multi_case_file_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "bad.onnxtxt"
    source.write_text(CASE_FILE.replace("# CHECK-NOT: Identity\n# CHECK: = Sigmoid(\n", ""))
    with pytest.raises(ValueError, match=r"bad.onnxtxt:9: a case in a multi-case file needs CHECK lines"):
        read_cases(source)

"""Each rule has one home: the checks that keep it so (issue 14, "one home per rule").

- ONNX operator facts (weight input and output-channel axis per op, Gemm ``transB``, the default Q/DQ axis,
  weight/activation Q/DQ predicates, node labels, dtypes): ``qdq_compiler/ir/op_facts.py``.
- The INT8 grid (127) and the amax -> scale math: ``qdq_compiler/quant/grid.py``.
- No pass imports another pass; no pass, IR or quant module imports the TensorRT linter for helpers.

The checks read the source with ``ast``, so docstrings and comments that mention 127 do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSES = ROOT / "passes"
PACKAGE = ROOT / "qdq_compiler"
GRID = PACKAGE / "quant" / "grid.py"
OP_FACTS = PACKAGE / "ir" / "op_facts.py"

# Places allowed to write a grid number, each with the reason ({"path/prefix": "why"}); none today.
GRID_LITERAL_EXCEPTIONS: dict[str, str] = {}
# Modules allowed to import the linter, each with the reason.
LINTER_IMPORT_EXCEPTIONS: dict[str, str] = {
    "passes/verify_trt.py": "the verify-trt pass runs the linter (lint_model) on the compiled model: its job",
}
LINTER = "qdq_compiler.targets.lint"


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _sources(*folders: Path) -> list[Path]:
    return sorted(path for folder in folders for path in folder.rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str, int]]:
    """(line, imported module, relative level) of every import in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
    return found


def _excepted(path: Path, exceptions: dict[str, str]) -> bool:
    return any(_relative(path).startswith(prefix) for prefix in exceptions)


def passes_importing_passes(files: list[Path]) -> list[str]:
    """`file:line module` for each import of a pass module by a pass (absolute or relative)."""
    bad = []
    for path in files:
        for line, module, level in _imports(path):
            if level > 0 or module == "qdq_compiler.passes" or module.startswith("qdq_compiler.passes."):
                bad.append(f"{_relative(path)}:{line} {'.' * level}{module}")
    return bad


def linter_imports(files: list[Path]) -> list[str]:
    """`file:line` for each import of the linter outside the documented exceptions."""
    bad = []
    for path in files:
        if _excepted(path, LINTER_IMPORT_EXCEPTIONS):
            continue
        for line, module, _ in _imports(path):
            if module == LINTER or module.startswith(LINTER + "."):
                bad.append(f"{_relative(path)}:{line} {module}")
    return bad


def _is_number(node: ast.AST, value: int) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == value


def _is_grid_number(node: ast.AST) -> bool:
    """127 / 127.0 or -128 written as a number (the INT8 grid's ends; a bare 128 is often a size)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _is_number(node.operand, 128)
    return _is_number(node, 127)


def grid_literals(files: list[Path]) -> list[str]:
    """`file:line` for each 127 or -128 written as a number outside quant/grid.py and the exceptions."""
    bad = []
    for path in files:
        if path == GRID or _excepted(path, GRID_LITERAL_EXCEPTIONS):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        bad.extend(f"{_relative(path)}:{node.lineno}" for node in ast.walk(tree) if _is_grid_number(node))
    return bad


def attribute_reads(files: list[Path], names: tuple[str, ...]) -> list[str]:
    """`file:line name` for each ``<x>.attributes.get("<name>")`` outside ir/op_facts.py."""
    bad = []
    for path in files:
        if path == OP_FACTS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            reads_attributes = isinstance(owner, ast.Attribute) and owner.attr == "attributes"
            if not (reads_attributes and node.func.attr == "get" and node.args):
                continue
            key = node.args[0]
            if isinstance(key, ast.Constant) and key.value in names:
                bad.append(f"{_relative(path)}:{node.lineno} {key.value}")
    return bad


def test_no_pass_imports_another_pass() -> None:
    assert passes_importing_passes(_sources(PASSES)) == []


def test_passes_ir_and_quant_do_not_import_the_linter() -> None:
    files = _sources(PASSES, PACKAGE / "ir", PACKAGE / "quant", PACKAGE / "calib", PACKAGE / "rewrite")
    assert linter_imports(files) == []


def test_the_int8_grid_is_written_only_in_quant_grid() -> None:
    assert grid_literals(_sources(PASSES, PACKAGE)) == []


def test_q_dq_axis_and_gemm_transposes_are_read_only_in_op_facts() -> None:
    """The default Q/DQ axis (1) and Gemm's transA/transB are read in one place."""
    assert attribute_reads(_sources(PASSES, PACKAGE), ("axis", "transA", "transB")) == []


def test_trt_rules_take_weighted_op_facts_from_op_facts() -> None:
    """targets/trt_rules.py keeps TensorRT policy; the ONNX facts it reports are op_facts' objects."""
    from qdq_compiler.ir import op_facts
    from qdq_compiler.targets import trt_rules

    assert set(trt_rules.WEIGHTED_OPS) == set(op_facts.WEIGHTED_OPS)
    for op_type, rule in trt_rules.WEIGHTED_OPS.items():
        assert rule.op is op_facts.WEIGHTED_OPS[op_type]


# The checks above must be able to fail: each finds the copy it guards against in a planted file.


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("from .calibrate import apply_amax\n", "passes"),
        ("from qdq_compiler.passes.calibrate import AMAX_STATE\n", "passes"),
        ("import qdq_compiler.passes.calibrate\n", "passes"),
        ("from qdq_compiler.targets.lint import node_label\n", "linter"),
        ("INT8_MAX = 127.0\n", "grid"),
        ("low = -128\n", "grid"),
        ('axis = node.attributes.get("axis")\n', "attributes"),
        ('flag = node.attributes.get("transB")\n', "attributes"),
    ],
)
def test_each_check_finds_a_planted_copy(tmp_path: Path, text: str, check: str) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text('"""127 in a docstring is fine."""\n' + text)
    checks = {
        "passes": lambda files: passes_importing_passes(files),
        "linter": lambda files: linter_imports(files),
        "grid": lambda files: grid_literals(files),
        "attributes": lambda files: attribute_reads(files, ("axis", "transA", "transB")),
    }
    global ROOT
    saved, ROOT = ROOT, tmp_path  # _relative() names files from ROOT
    try:
        found = checks[check]([planted])
        clean = tmp_path / "clean.py"
        clean.write_text('"""The grid is 127 (a docstring)."""\n# 127 in a comment\nx = 12.7\n')
        assert all(fn([clean]) == [] for fn in checks.values())
    finally:
        ROOT = saved
    assert len(found) == 1 and found[0].startswith("planted.py:2")

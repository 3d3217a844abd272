"""Golden tests: run each golden/ case's pipeline and compare the dump with its .expected file."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdq_compiler.golden import discover, unified_diff

GOLDEN_ROOT = Path(__file__).resolve().parent.parent / "golden"
CASES = discover(GOLDEN_ROOT)


def test_golden_cases_exist() -> None:
    assert len(CASES) >= 8, "golden/ should hold cases for every pass"


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_golden(case, update_golden: bool) -> None:
    actual = case.run()
    if update_golden:
        case.expected_path.write_text(actual)
        return
    assert case.expected_path.exists(), f"{case.expected_path} missing: run pytest --update-golden"
    expected = case.expected_path.read_text()
    if actual != expected:
        pytest.fail("golden mismatch:\n" + unified_diff(expected, actual, case.case_id), pytrace=False)


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_golden_is_idempotent(case) -> None:
    """Running the case's last pass again on its own output changes nothing."""
    from qdq_compiler.ir import dump
    from qdq_compiler.pm import PassManager

    model = case.load_input()
    manager = PassManager(case.pipeline)
    ctx = case.context()
    manager.run(model, ctx, stamp=False)
    first = dump(model)
    results = [PassManager([p]).run(model, ctx, stamp=False)[0] for p in manager.passes[-1:]]
    assert dump(model) == first
    assert not results[0].modified, f"{manager.passes[-1].name} changed its own output"

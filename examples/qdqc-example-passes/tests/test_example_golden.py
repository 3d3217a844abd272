"""The example's golden cases: golden/<pass>/<case>.onnxtxt run through their `# RUN:` pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdq_compiler.golden import discover, unified_diff
from qdq_compiler.ir import dump
from qdq_compiler.pm import PassManager

GOLDEN_ROOT = Path(__file__).resolve().parent.parent / "golden"
CASES = discover(GOLDEN_ROOT)


def test_the_example_has_golden_cases() -> None:
    assert len(CASES) >= 2, f"no golden cases found under {GOLDEN_ROOT}"


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_example_golden(case, update_golden: bool) -> None:
    actual = case.run()
    if update_golden:
        case.expected_path.write_text(actual)
        return
    assert case.expected_path.exists(), f"{case.expected_path} missing: run pytest --update-golden"
    expected = case.expected_path.read_text()
    if actual != expected:
        pytest.fail("golden mismatch:\n" + unified_diff(expected, actual, case.case_id), pytrace=False)


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_example_golden_is_idempotent(case) -> None:
    """The case's pipeline run again on its own output changes nothing and says so."""
    model = case.load_input()
    PassManager(case.pipeline).run(model, case.context(), stamp=False)
    first = dump(model)
    results = PassManager(case.pipeline).run(model, case.context(), stamp=False)
    assert dump(model) == first
    assert not any(result.modified for result in results)

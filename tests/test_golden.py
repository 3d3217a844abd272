"""Golden tests: run each golden/ case's pipeline; compare the dump with its .expected file, or run the case's
CHECK lines on it (CHECK-style cases have no .expected file and --update-golden never writes one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdq_compiler.golden import discover

GOLDEN_ROOT = Path(__file__).resolve().parent.parent / "golden"
CASES = discover(GOLDEN_ROOT)


def test_golden_cases_exist() -> None:
    assert len(CASES) >= 8, "golden/ should hold cases for every pass"


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_golden(case, update_golden: bool) -> None:
    failure = case.verify(case.run(), update=update_golden)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def test_check_cases_have_no_stale_snapshot() -> None:
    """A file of CHECK-style cases has no .expected beside it (a leftover would look like a checked dump)."""
    stale = sorted({str(c.expected_path) for c in CASES if c.checks and c.expected_path.exists()})
    assert not stale, f"CHECK-style cases with a leftover .expected file: {stale}"


# One idempotency run per distinct input and pipeline (the sections of a CHECK file share theirs).
RUNS = list({c.run_key: c for c in CASES}.values())


@pytest.mark.parametrize("case", RUNS, ids=[c.case_id for c in RUNS])
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

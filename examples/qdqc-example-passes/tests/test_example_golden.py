"""The example's golden cases: golden/<pass>/<case>.onnxtxt run through their `# RUN:` pipeline, compared
with the `.expected` dump or checked by `# CHECK:` lines (qdq_compiler.golden, as the main suite does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdq_compiler.golden import discover
from qdq_compiler.ir import dump
from qdq_compiler.pm import PassManager

GOLDEN_ROOT = Path(__file__).resolve().parent.parent / "golden"
CASES = discover(GOLDEN_ROOT)


def test_the_example_has_golden_cases() -> None:
    assert len(CASES) >= 2, f"no golden cases found under {GOLDEN_ROOT}"


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_example_golden(case, update_golden: bool) -> None:
    failure = case.verify(case.run(), update=update_golden)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_example_golden_is_idempotent(case) -> None:
    """The case's pipeline run again on its own output changes nothing and says so."""
    model = case.load_input()
    PassManager(case.pipeline).run(model, case.context(), stamp=False)
    first = dump(model)
    results = PassManager(case.pipeline).run(model, case.context(), stamp=False)
    assert dump(model) == first
    assert not any(result.modified for result in results)

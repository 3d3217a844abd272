"""pytest options of the example's tests (also collected by the main suite's `python -m pytest`)."""

from __future__ import annotations

import contextlib

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    # Run from the qdq_compiler repository, its tests/conftest.py has added the option already.
    with contextlib.suppress(ValueError):
        parser.addoption(
            "--update-golden",
            action="store_true",
            default=False,
            help="Rewrite golden/*.expected files from the current output instead of comparing.",
        )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))

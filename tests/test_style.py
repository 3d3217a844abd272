"""The code base stays ruff clean, ruff-formatted and mypy clean (dev dependencies, so always installed)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff")
    assert ruff is not None, "ruff is missing: install with pip install -e '.[dev]'"
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_clean() -> None:
    ruff = shutil.which("ruff")
    assert ruff is not None, "ruff is missing: install with pip install -e '.[dev]'"
    result = subprocess.run(
        [ruff, "format", "--check", "--no-cache", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, "run `ruff format .`:\n" + result.stdout + result.stderr


def test_mypy_clean() -> None:
    """mypy checks qdq_compiler/ and passes/ as configured in pyproject's [tool.mypy]; the cache in
    .mypy_cache/ makes a warm run take seconds."""
    missing = "mypy is missing: install with pip install -e '.[dev]'"
    assert importlib.util.find_spec("mypy") is not None, missing
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_is_listed_for_installation() -> None:
    """A package missing from pyproject's list works in an editable install and is absent from a wheel."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "qdq_compiler").rglob("__init__.py")
    } | {"qdq_compiler.passes"}
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"

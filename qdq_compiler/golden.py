"""Golden cases: an input model (ONNX text or a Python builder), a `# RUN:` pipeline, an expected dump."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from qdq_compiler.ir import dump, load_model
from qdq_compiler.pm import PassContext, PassManager

RUN_PREFIX = "# RUN:"


@dataclass(frozen=True)
class GoldenCase:
    """One golden case on disk."""

    source: Path
    pipeline: str

    @property
    def expected_path(self) -> Path:
        return self.source.with_suffix(".expected")

    @property
    def case_id(self) -> str:
        return f"{self.source.parent.name}/{self.source.stem}"

    def load_input(self) -> ir.Model:
        """The input model of the case."""
        if self.source.suffix == ".onnxtxt":
            text = "\n".join(
                line for line in self.source.read_text().splitlines() if not line.startswith("#")
            )
            return load_model(onnx.parser.parse_model(text))
        module = _import_file(self.source)
        return load_model(module.build())

    def context(self) -> PassContext:
        """The pass context of the case: a builder case may define `calibration_data()`."""
        ctx = PassContext()
        if self.source.suffix == ".py":
            module = _import_file(self.source)
            if hasattr(module, "calibration_data"):
                ctx.calibration_data = module.calibration_data()
        return ctx

    def run(self) -> str:
        """Run the case's pipeline on its input and return the dump."""
        model = self.load_input()
        PassManager(self.pipeline).run(model, self.context(), stamp=False)
        return dump(model)


def discover(root: Path) -> list[GoldenCase]:
    """Every case under `root` (sorted), read from its `# RUN:` line."""
    cases = []
    for source in sorted(root.rglob("*")):
        if source.suffix not in (".onnxtxt", ".py") or source.name.startswith("_"):
            continue
        pipeline = _run_line(source)
        if pipeline is not None:
            cases.append(GoldenCase(source, pipeline))
    return cases


def _run_line(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(RUN_PREFIX):
            return line[len(RUN_PREFIX) :].strip()
    return None


def _import_file(path: Path):
    """Import a builder case; modules at the golden root (`_placed.py`) are importable from it."""
    spec = importlib.util.spec_from_file_location(f"golden_case_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    root = str(path.parent.parent)
    sys.path.insert(0, root)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(root)
    return module


def unified_diff(expected: str, actual: str, name: str) -> str:
    """A readable diff of expected vs actual dumps."""
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{name}.expected",
            tofile=f"{name} (actual)",
        )
    )

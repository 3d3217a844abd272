"""Golden cases: an input model (ONNX text or a Python builder), a `# RUN:` pipeline, and either an expected
dump (`<case>.expected`) or FileCheck-style `# CHECK:` lines (`qdq_compiler.filecheck`)."""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from qdq_compiler.filecheck import CheckFailed, CheckSyntaxError, Directive, check_text, parse_directives
from qdq_compiler.ir import dump, load_model
from qdq_compiler.pm import PassContext, PassManager

RUN_PREFIX = "# RUN:"
BUILD_PREFIX = "# BUILD:"
# A line of five or more dashes after `#` separates the cases of one file.
CASE_SEPARATOR = re.compile(r"^#\s*-{5,}\s*$")


# Dumps already computed, by GoldenCase.run_key (the passes and builders are deterministic).
_DUMPS: dict[tuple[Path, str, str, str], str] = {}


@dataclass(frozen=True)
class GoldenCase:
    """One golden case on disk: a whole file, or one `# -----` section of a file.

    A case is either a snapshot case (its dump must equal `<source stem>.expected`) or a CHECK-style case
    (its `# CHECK...` lines must hold on the dump; it has no `.expected` file). A builder case (`.py`)
    calls `build()`, or the function its `# BUILD: name` line names.
    """

    source: Path
    pipeline: str
    checks: tuple[Directive, ...] = ()
    builder: str = "build"
    model_text: str = ""
    section: int = 0  # 1, 2, ... when the file holds several cases

    @property
    def expected_path(self) -> Path:
        return self.source.with_suffix(".expected")

    @property
    def case_id(self) -> str:
        suffix = f"#{self.section}" if self.section else ""
        return f"{self.source.parent.name}/{self.source.stem}{suffix}"

    def load_input(self) -> ir.Model:
        """The input model of the case."""
        if self.source.suffix == ".onnxtxt":
            return load_model(onnx.parser.parse_model(self.model_text))
        build = getattr(_import_file(self.source), self.builder, None)
        if build is None:
            raise ValueError(f"{self.source}: no builder function {self.builder}()")
        return load_model(build())

    def context(self) -> PassContext:
        """The pass context of the case: a builder case may define `calibration_data()`."""
        ctx = PassContext()
        if self.source.suffix == ".py":
            module = _import_file(self.source)
            if hasattr(module, "calibration_data"):
                ctx.calibration_data = module.calibration_data()
        return ctx

    @property
    def run_key(self) -> tuple[Path, str, str, str]:
        """What the dump depends on: sections of one file with equal keys share one run."""
        return (self.source, self.builder, self.model_text, self.pipeline)

    def run(self) -> str:
        """Run the case's pipeline on its input and return the dump (computed once per `run_key`)."""
        if self.run_key not in _DUMPS:
            model = self.load_input()
            PassManager(self.pipeline).run(model, self.context(), stamp=False)
            _DUMPS[self.run_key] = dump(model)
        return _DUMPS[self.run_key]

    def check(self, actual: str) -> None:
        """Run the case's CHECK lines on its dump; raises `CheckFailed` with a readable message."""
        check_text(list(self.checks), actual, name=f"the dump of {self.case_id}")

    def verify(self, actual: str, update: bool = False) -> str | None:
        """Why `actual` fails the case, or None when it passes.

        A CHECK-style case runs its checks, also with `update` (it has no snapshot to rewrite). A snapshot
        case compares with its `.expected` file, or with `update` rewrites that file and passes.
        """
        if self.checks:
            try:
                self.check(actual)
            except (CheckFailed, CheckSyntaxError) as failure:
                return str(failure)
            return None
        if update:
            self.expected_path.write_text(actual)
            return None
        if not self.expected_path.exists():
            return f"{self.expected_path} missing: run pytest --update-golden"
        expected = self.expected_path.read_text()
        if actual != expected:
            return "golden mismatch:\n" + unified_diff(expected, actual, self.case_id)
        return None


def discover(root: Path) -> list[GoldenCase]:
    """Every case under `root` (sorted by file, then section)."""
    cases = []
    for source in sorted(root.rglob("*")):
        if source.suffix not in (".onnxtxt", ".py") or source.name.startswith("_"):
            continue
        cases.extend(read_cases(source, shown_as=_shown_path(source, root)))
    return cases


def read_cases(source: Path, shown_as: str | None = None) -> list[GoldenCase]:
    """The cases of one file: one per `# -----` section that has a `# RUN:` line."""
    sections = _split_sections(source.read_text().splitlines())
    cases = []
    for number, (first_line, lines) in enumerate(sections, start=1):
        pipeline = _prefixed(lines, RUN_PREFIX)
        if pipeline is None:
            continue
        checks = tuple(parse_directives(lines, shown_as or str(source), first_line))
        if len(sections) > 1 and not checks:
            raise ValueError(f"{source}:{first_line}: a case in a multi-case file needs CHECK lines")
        model_text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        cases.append(
            GoldenCase(
                source,
                pipeline,
                checks=checks,
                builder=_prefixed(lines, BUILD_PREFIX) or "build",
                model_text=model_text if source.suffix == ".onnxtxt" else "",
                section=number if len(sections) > 1 else 0,
            )
        )
    return cases


def _split_sections(lines: list[str]) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each `# -----`-separated section."""
    sections: list[tuple[int, list[str]]] = [(1, [])]
    for number, line in enumerate(lines, start=1):
        if CASE_SEPARATOR.match(line):
            sections.append((number + 1, []))
        else:
            sections[-1][1].append(line)
    return sections


def _prefixed(lines: list[str], prefix: str) -> str | None:
    for line in lines:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return None


def _shown_path(source: Path, root: Path) -> str:
    """The path check failures name: relative to the golden root's parent (`golden/<pass>/<case>`)."""
    try:
        return str(source.relative_to(root.parent))
    except ValueError:
        return str(source)


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

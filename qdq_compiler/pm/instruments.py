"""Instruments: hooks around each pass (verify, timing, statistics, IR printing and dumps, reproducer)."""

from __future__ import annotations

import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import onnx_ir as ir

from qdq_compiler.ir import dump, save_model, verify
from qdq_compiler.pm.base import Pass, PassResult


class Instrument:
    """Base class: override any hook. Hooks see the pass, its position and the model."""

    def before_pass(self, index: int, pass_: Pass, model: ir.Model) -> None:
        """Called before a pass runs."""

    def after_pass(self, index: int, pass_: Pass, model: ir.Model, result: PassResult) -> None:
        """Called after a pass returned."""

    def on_failure(self, index: int, pass_: Pass, error: BaseException) -> None:
        """Called when a pass raised."""

    def finish(self) -> None:
        """Called once after the whole pipeline."""


class VerifyEach(Instrument):
    """Run the IR verifier (and the onnx checker) after every pass."""

    def after_pass(self, index, pass_, model, result):
        verify(model, check_onnx=True)


class Timing(Instrument):
    """Wall time per pass, kept in `rows` and printed as a table at the end unless `print_table` is False."""

    def __init__(self, stream: TextIO | None = None, print_table: bool = True):
        self.stream = stream or sys.stderr
        self.print_table = print_table
        self.rows: list[tuple[str, float]] = []
        self._start = 0.0

    def before_pass(self, index, pass_, model):
        self._start = time.perf_counter()

    def after_pass(self, index, pass_, model, result):
        self.rows.append((pass_.name, time.perf_counter() - self._start))

    def finish(self):
        if self.print_table:
            print(format_timing(self.rows), file=self.stream)


def format_timing(rows: list[tuple[str, float]]) -> str:
    """The `--timing` table: per row its wall time, its share of the total, its name; then the total.

    Rows are passes in the order they ran; a step that is not a pass is named in parentheses.
    """
    total = sum(seconds for _, seconds in rows)
    lines = ["=== pass timing ==="]
    for name, seconds in rows:
        lines.append(f"  {seconds * 1000:9.1f} ms  {100 * seconds / (total or 1e-12):5.1f}%  {name}")
    lines.append(f"  {total * 1000:9.1f} ms  100.0%  total")
    return "\n".join(lines)


class PassStatistics(Instrument):
    """Collect each pass's named counters and print them at the end."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.totals: dict[str, Counter[str]] = {}

    def after_pass(self, index, pass_, model, result):
        self.totals.setdefault(pass_.name, Counter()).update(result.statistics)

    def finish(self):
        print("=== pass statistics ===", file=self.stream)
        for name, counters in self.totals.items():
            print(f"{name}:", file=self.stream)
            for key in sorted(counters):
                print(f"  {counters[key]:8d} {key}", file=self.stream)


class PrintIR(Instrument):
    """Print the IR after the named passes (`all` for every pass), or only after passes that changed it."""

    def __init__(self, names: tuple[str, ...] = (), only_changed: bool = False, stream: TextIO | None = None):
        self.names = set(names)
        self.only_changed = only_changed
        self.stream = stream or sys.stderr

    def after_pass(self, index, pass_, model, result):
        wanted = "all" in self.names or pass_.name in self.names or (self.only_changed and result.modified)
        if wanted:
            print(f"// ----- IR after {pass_.name} -----", file=self.stream)
            self.stream.write(dump(model))


class IRDumpDir(Instrument):
    """Write `NNN_<pass>.txt` dumps into a folder: the input as 000_input.txt, then one per pass."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._wrote_input = False

    def before_pass(self, index, pass_, model):
        if not self._wrote_input:
            (self.folder / "000_input.txt").write_text(dump(model))
            self._wrote_input = True

    def after_pass(self, index, pass_, model, result):
        (self.folder / f"{index + 1:03d}_{pass_.name}.txt").write_text(dump(model))


class Reproducer(Instrument):
    """On failure, save the failing pass's input model and the rest of the pipeline for `qdqc opt`.

    The folder gets ``reproducer.onnx`` (the input, with the state earlier passes left in it),
    ``reproducer.pipeline`` and ``README.txt`` with the `qdqc opt` command that replays the failure: absolute
    paths, the remaining pipeline with its options, and ``replay_flags(index, folder)`` (plugins, calibration
    data; it may write files the replay needs into the folder).
    """

    def __init__(
        self,
        folder: str | Path,
        pipeline_text_from: Callable[[int], str],
        replay_flags: Callable[[int, Path], list[str]] | None = None,
    ):
        self.folder = Path(folder)
        self._pipeline_from = pipeline_text_from
        self._replay_flags = replay_flags
        self._snapshot: bytes | None = None
        self.written: Path | None = None

    def before_pass(self, index, pass_, model):
        from qdq_compiler.ir import to_proto

        self._snapshot = to_proto(model).SerializeToString()

    def on_failure(self, index, pass_, error):
        if self._snapshot is None:
            return
        from qdq_compiler.ir import load_model

        self.folder.mkdir(parents=True, exist_ok=True)
        folder = self.folder.resolve()
        model_path = folder / "reproducer.onnx"
        save_model(load_model(self._snapshot), model_path)
        remaining = self._pipeline_from(index)
        (folder / "reproducer.pipeline").write_text(remaining + "\n")
        note = ""
        try:
            flags = self._replay_flags(index, folder) if self._replay_flags is not None else []
        except Exception as exc:  # never hide the pass's own failure behind the reproducer's
            flags, note = [], f"(the replay's plugin and calibration flags could not be prepared: {exc})\n"
        output = folder / "replayed.onnx"
        command = ["qdqc", "opt", str(model_path), "--pipeline", remaining, "-o", str(output)]
        (folder / "README.txt").write_text(
            f"pass '{pass_.name}' failed: {error}\nreplay with:\n  {shlex.join(command + flags)}\n{note}"
        )
        self.written = model_path

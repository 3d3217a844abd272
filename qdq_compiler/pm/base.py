"""The pass interface: Pass, its Options dataclass, PassResult and PassContext."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx_ir as ir


@dataclass(frozen=True)
class NoOptions:
    """Options of a pass that takes none."""


# The first item of every fact that says "shape inference finds nothing new on this model": infer-shapes
# records (SHAPES_INFERRED, its options). A pass whose edits change no value's type, shape or constant
# contents (merging equal constants, removing dead nodes, naming nodes) lists these facts as preserved.
SHAPES_INFERRED = "shapes-inferred"


def shape_facts(facts: set[Hashable] | None) -> frozenset[Hashable]:
    """The facts in ``facts`` (a PassContext's) that say shapes are inferred; empty when none are known."""
    if not facts:
        return frozenset()
    return frozenset(f for f in facts if isinstance(f, tuple) and f and f[0] == SHAPES_INFERRED)


@dataclass
class PassResult:
    """What a pass did: whether it changed the model, and named counters (`num-bn-folded`).

    `preserved` names the model facts (see `PassContext.facts`) that still hold although the pass
    modified the model: infer-shapes changes only shape annotations, so the fact that shapes are
    inferred survives it.
    """

    modified: bool
    statistics: Counter[str] = field(default_factory=Counter)
    preserved: frozenset[Hashable] = frozenset()


@dataclass
class PassContext:
    """Every runtime input of a pass: calibration data and statistics, logger, progress display.

    What shapes the output (the TensorRT target, methods, exclusions) is a pass option instead, so the
    printed pipeline says it.

    Passes read what they need from here; nothing reaches a pass through globals or **kwargs.
    """

    calibration_data: Any = None
    calibration_stats: dict[str, Any] = field(default_factory=dict)
    # calibrate{method=auto}'s end scores of its variants, measured by the evaluation engine before the
    # pipeline runs (qdq_compiler.quant.auto_method.AutoValidation; None: not validated)
    auto_validation: Any = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("qdqc"))
    progress: bool = False  # draw progress bars (calibration) on a terminal
    # Collects calibration statistics in place of calib.collect_statistics (same arguments and result, e.g.
    # spread over Ray workers by qdq_compiler.search.distributed); None: collect in this process.
    statistics_collector: Callable[..., dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # for plugin passes; built-in passes use fields
    # Facts about the model that hold until a pass modifies it (infer-shapes records that it ran, with
    # its options): kept by the PassManager, which forgets all but a pass's `preserved` facts whenever
    # the pass reports `modified`. None when a pass runs by itself: then nothing is known.
    facts: set[Hashable] | None = None


class Pass:
    """A named, in-place transformation of an IR model.

    Subclasses set `name` (kebab-case, verb first), `summary` (one line), an `Options` frozen dataclass,
    and implement `run`. Running a pass twice must report `modified=False` the second time.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None, explicit_options: Mapping[str, str] | None = None):
        self.options = options if options is not None else self.Options()
        # Options field -> the text that set it (`legalize-trt{target=trt11}`, `--target trt11`): what
        # the pipeline text or a flag set explicitly; a later flag may only agree. Replaced, never mutated.
        self.explicit_options: dict[str, str] = dict(explicit_options or {})

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        """Transform `model` in place and say whether it changed."""
        raise NotImplementedError

    def adjust_earlier_passes(self, earlier: list[Pass]) -> None:
        """Give passes that run before this one the options this pass's options require of them.

        Only options the text left unset change; one the text set explicitly to a value that does not
        satisfy the requirement is a PipelineError naming both. Must be idempotent (called again after flags).
        """

    def __repr__(self) -> str:
        from qdq_compiler.pm.pipeline import format_entry

        return format_entry(self.name, self.options)


def option_fields(options_cls: type) -> list[dataclasses.Field]:
    """The dataclass fields of an Options class, in declaration order."""
    return list(dataclasses.fields(options_cls))


def function_pass(name: str, summary: str):
    """Turn `fn(model, ctx) -> bool | PassResult` into an option-less Pass class (for trivial passes)."""

    def wrap(fn) -> type[Pass]:
        def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
            outcome = fn(model, ctx)
            return outcome if isinstance(outcome, PassResult) else PassResult(modified=bool(outcome))

        return type(
            fn.__name__,
            (Pass,),
            {
                "name": name,
                "summary": summary,
                "run": run,
                "__doc__": fn.__doc__,
                "__module__": fn.__module__,
            },
        )

    return wrap

"""The pass manager: runs a pipeline over a model with instruments, and stamps the result."""

from __future__ import annotations

from collections.abc import Hashable

import onnx_ir as ir

import qdq_compiler
from qdq_compiler.collector import collector_paused
from qdq_compiler.errors import PassFailure
from qdq_compiler.pm.base import Pass, PassContext, PassResult
from qdq_compiler.pm.instruments import Instrument
from qdq_compiler.pm.pipeline import format_pipeline, parse_pipeline
from qdq_compiler.pm.pipeline_options import settle_pipeline

PIPELINE_METADATA_KEY = "qdq_compiler.pipeline"
VERSION_METADATA_KEY = "qdq_compiler.version"


class PassManager:
    """An ordered list of passes run in place on one model."""

    def __init__(self, pipeline: str | list[Pass], instruments: list[Instrument] | None = None):
        passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
        self.passes = settle_pipeline(passes)
        self.instruments = list(instruments or [])

    @property
    def pipeline_text(self) -> str:
        """The pipeline as text; parses back to the same passes."""
        return format_pipeline(self.passes)

    def remaining_pipeline(self, start: int) -> str:
        """The pipeline text from pass `start` on (for reproducers)."""
        return format_pipeline(self.passes[start:])

    def run(self, model: ir.Model, ctx: PassContext | None = None, stamp: bool = True) -> list[PassResult]:
        """Run every pass in order; a failing pass raises PassFailure naming it and the pipeline so far."""
        ctx = ctx or PassContext()
        facts: set[Hashable] = set()  # nothing is known about a model this run has not looked at
        ctx.facts = facts
        with collector_paused():  # a run keeps what it makes; collections would only walk it again
            results = self._run_passes(model, ctx, facts)
        for instrument in self.instruments:
            instrument.finish()
        if stamp:
            stamp_model(model, self.pipeline_text)
        return results

    def _run_passes(self, model: ir.Model, ctx: PassContext, facts: set[Hashable]) -> list[PassResult]:
        results: list[PassResult] = []
        for index, pass_ in enumerate(self.passes):
            for instrument in self.instruments:
                instrument.before_pass(index, pass_, model)
            try:
                result = pass_.run(model, ctx)
                if not isinstance(result, PassResult):
                    raise TypeError(f"run() returned {type(result).__name__}, expected PassResult")
                if result.modified:
                    facts &= result.preserved
                for instrument in self.instruments:
                    instrument.after_pass(index, pass_, model, result)
            except Exception as error:
                for instrument in self.instruments:
                    instrument.on_failure(index, pass_, error)
                if isinstance(error, PassFailure):
                    raise
                node = getattr(error, "node_name", None)
                failure = PassFailure(pass_.name, format_pipeline(self.passes[:index]), error, node)
                raise failure from error
            results.append(result)
        return results


def stamp_model(model: ir.Model, pipeline_text: str) -> None:
    """Record the pipeline and the compiler version in the model's metadata."""
    model.metadata_props[PIPELINE_METADATA_KEY] = pipeline_text
    model.metadata_props[VERSION_METADATA_KEY] = qdq_compiler.__version__

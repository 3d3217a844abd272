"""`qdqc compile`'s numerical self-check and JSON summary: the options, where the samples come from, the
warnings, `--check-strict` and `--summary-json`."""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import click
import onnx
import onnx_ir as ir

from qdq_compiler.accuracy.selfcheck import (
    DEFAULT_SAMPLES,
    DEFAULT_SQNR_MIN_DB,
    SelfCheck,
    first_samples,
    run_selfcheck,
    skipped_check,
)
from qdq_compiler.cli_options import flag_name
from qdq_compiler.errors import ChecksFailed, QdqcError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.summary import compile_summary_json, write_json_atomic

logger = logging.getLogger("qdqc")


def selfcheck_options(fn):
    """Options of the self-check and the JSON summary."""
    options = [
        click.option("--no-check", is_flag=True, help="Skip the numerical self-check after compiling."),
        click.option(
            "--check-samples",
            type=click.IntRange(min=1),
            default=None,
            help=f"Self-check on the first N samples (default {DEFAULT_SAMPLES}).",
        ),
        click.option(
            "--check-sqnr-min",
            type=float,
            default=None,
            metavar="DB",
            help=f"Warn when an output's SQNR against the float model is below DB (default "
            f"{DEFAULT_SQNR_MIN_DB:g}).",
        ),
        click.option(
            "--check-data",
            default=None,
            metavar="DATA",
            help="Inputs for the self-check (default: the --calib data); any pipeline.",
        ),
        click.option(
            "--check-strict",
            is_flag=True,
            help="A self-check warning, or a skipped self-check, fails the command (exit 1; the model is "
            "still written).",
        ),
        click.option(
            "--summary-json",
            default=None,
            metavar="FILE",
            help="Also write the compile summary (Q/DQ counts, layer decisions, self-check) as JSON.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


class CompileSelfCheck:
    """The self-check of one compile: set up before the pipeline (bad options and data fail before any
    work), run on the compiled model, then reported."""

    def __init__(
        self, model_path: str, output: str, manager: PassManager, pass_ctx: PassContext, opts: dict
    ) -> None:
        self.model_path = model_path
        self.output = output
        self.enabled = not opts["no_check"]
        self.samples = opts["check_samples"] or DEFAULT_SAMPLES
        self.sqnr_min_db = DEFAULT_SQNR_MIN_DB if opts["check_sqnr_min"] is None else opts["check_sqnr_min"]
        if not math.isfinite(self.sqnr_min_db):
            raise QdqcError(f"--check-sqnr-min must be a finite number of dB, not {self.sqnr_min_db}")
        self.strict = opts["check_strict"]
        self.summary_json = opts["summary_json"]
        self.pass_names = {p.name for p in manager.passes}
        self.pass_ctx = pass_ctx
        self.data = None
        if not self.enabled:
            keys = ("check_samples", "check_sqnr_min", "check_data", "check_strict")
            given = [flag_name(key) for key in keys if opts[key] not in (None, False)]
            if given:
                raise QdqcError(f"{', '.join(given)} configure the self-check, which --no-check turns off")
        elif opts["check_data"]:
            self.data = self._open(opts["check_data"], opts.get("batch_size"))

    def _open(self, source: str, batch_size: int | None):
        from qdq_compiler.calib import open_calibration_data
        from qdq_compiler.calib.errors import CalibrationError

        try:  # the input declarations are enough; the weights are read when the check runs
            header = onnx.load(self.model_path, load_external_data=False)
        except Exception:  # unreadable: the model loader says why in one line
            header = to_proto(load_model(self.model_path))
        try:
            return open_calibration_data(source, header, batch_size=batch_size, limit=self.samples)
        except CalibrationError as exc:
            raise QdqcError(f"self-check data (--check-data): {exc}") from None

    @property
    def reference_label(self) -> str:
        """A pipeline that strips the input's Q/DQ compares with the quantized input, not a float model."""
        return "input model" if "strip-qdq" in self.pass_names else "float model"

    def run(self, compiled: ir.Model) -> SelfCheck | None:
        """The check on the compiled model; None with --no-check."""
        if not self.enabled:
            return None
        data = self.data or self.pass_ctx.calibration_data
        if data is None:
            return skipped_check(self._why_no_data(), self.sqnr_min_db)
        if not data.reiterable:
            return skipped_check("the calibration data could be read only once", self.sqnr_min_db)
        start = time.perf_counter()
        dynamic = all(spec.shape[:1] == (None,) for spec in data.specs)
        batches = first_samples(data, self.samples, dynamic_batch=dynamic)
        reference = to_proto(load_model(self.model_path))
        check = run_selfcheck(reference, to_proto(compiled), batches, self.sqnr_min_db, self.reference_label)
        return dataclasses.replace(check, seconds=time.perf_counter() - start)  # reading the data included

    def _why_no_data(self) -> str:
        if "calibrate" in self.pass_names:
            return "compiled from --calib-cache without data; give --check-data DATA or --calib DATA"
        return "this pipeline reads no data and random inputs are never used; give --check-data DATA"

    def finish(self, check: SelfCheck | None, compiled: ir.Model, pipeline_text: str) -> None:
        """Log each warning, write --summary-json, and fail under --check-strict."""
        if check is not None:
            for line in check.warnings:
                logger.warning(line)
        if self.summary_json:
            data = compile_summary_json(compiled, pipeline_text, check, self.model_path, self.output)
            write_json_atomic(self.summary_json, data)  # an OSError is one line naming the file
        if check is None or not self.strict:
            return
        if check.skipped:
            raise ChecksFailed(f"--check-strict: the self-check was skipped ({check.skipped})")
        if check.warnings:
            more = f" (and {len(check.warnings) - 1} more)" if len(check.warnings) > 1 else ""
            written = f"the model was written to {self.output}"
            raise ChecksFailed(f"--check-strict: {check.warnings[0]}{more}; {written}")

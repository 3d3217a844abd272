"""The numerical self-check `qdqc compile` runs after its pipeline: the reference (float input) model and the
compiled model run in onnxruntime on the first few calibration samples, output by output.

An output is flagged when its SQNR against the reference is below a threshold, when it is constant (or all
zero) while the reference output is not, or when it holds NaN or Inf; an output that passes is also checked
channel by channel (`accuracy/channels.py`: dead or very noisy channels the output-wide SQNR hides). A model
ending in nodes onnxruntime cannot run (TensorRT plugins) is compared up to those nodes, as `qdqc sensitivity`
does.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from qdq_compiler.accuracy.channels import ChannelCheck, channel_problems, check_channels
from qdq_compiler.accuracy.numerics import onnxruntime_part, run_outputs, sqnr_db
from qdq_compiler.errors import QdqcError

__all__ = [
    "DEFAULT_SAMPLES",
    "DEFAULT_SQNR_MIN_DB",
    "OutputCheck",
    "SelfCheck",
    "first_samples",
    "format_selfcheck",
    "run_selfcheck",
    "selfcheck_to_json",
    "skipped_check",
]

DEFAULT_SAMPLES = 4
# Correct compiles of the bundled models measure 17.7-44 dB per output (trt10 and trt11); a dead branch or a
# lost activation gives about 0 dB or less. 10 dB (noise at a tenth of the signal power) lies between.
DEFAULT_SQNR_MIN_DB = 10.0
JSON_CHANNELS = 16  # channel indices listed in the summary JSON

Batch = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class OutputCheck:
    """One output: its SQNR against the reference in dB, and what is wrong with it ('' when nothing)."""

    name: str
    sqnr_db: float
    problem: str = ""  # a sentence for the warning
    flag: str = ""  # the problem in a word or two, for the summary line
    channels: tuple[ChannelCheck, ...] = ()  # per-channel checks (outputs of rank >= 2)
    channel_problems: tuple[str, ...] = ()  # sentences for warnings, when the output as a whole passes


@dataclass(frozen=True)
class SelfCheck:
    """What the self-check compared, or why it did not run (``skipped``)."""

    samples: int = 0
    sqnr_min_db: float = DEFAULT_SQNR_MIN_DB
    reference: str = "float model"
    outputs: tuple[OutputCheck, ...] = ()
    cut_before: tuple[str, ...] = ()  # nodes onnxruntime cannot run; outputs are compared before them
    skipped: str = ""  # the reason it did not run
    error: str = ""  # onnxruntime could not run the compiled model
    seconds: float = field(default=0.0, compare=False)

    @property
    def warnings(self) -> list[str]:
        """One line per problem, each naming the output (or the compiled model when it did not run)."""
        lines = [f"self-check: {self.error}"] if self.error else []
        for out in self.outputs:
            problems = [out.problem] if out.problem else list(out.channel_problems)
            lines += [f"self-check: output {out.name!r} {problem}" for problem in problems]
        return lines


def skipped_check(reason: str, sqnr_min_db: float = DEFAULT_SQNR_MIN_DB) -> SelfCheck:
    """A self-check that did not run, and why."""
    return SelfCheck(sqnr_min_db=sqnr_min_db, skipped=reason)


def first_samples(batches: Iterable[Batch], count: int, dynamic_batch: bool = True) -> list[dict]:
    """The first ``count`` samples of ``batches`` (batches of a fixed batch size are kept whole).

    With ``dynamic_batch`` the last batch is cut to the count; otherwise whole batches are taken until the
    count is reached (a model with a fixed batch of 8 is checked on 8 samples).
    """
    taken: list[dict] = []
    have = 0
    for batch in batches:
        size = int(next(iter(batch.values())).shape[0])
        if dynamic_batch and have + size > count:
            batch = {name: array[: count - have] for name, array in batch.items()}
            size = count - have
        taken.append(dict(batch))
        have += size
        if have >= count:  # stop before reading another batch (an image folder decodes on demand)
            break
    return taken


def _input_dtypes(model: onnx.ModelProto) -> dict[str, np.dtype]:
    initializers = {init.name for init in model.graph.initializer}
    return {
        value.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        for value in model.graph.input
        if value.name not in initializers and value.type.HasField("tensor_type")
    }


def _cast_to_inputs(batches: list[dict], model: onnx.ModelProto) -> list[dict]:
    """The batches in the dtypes ``model`` takes (a trt11 model with FP16 I/O takes float16); inputs the
    compiled model no longer has (a pass removed an unused one) are left out."""
    dtypes = _input_dtypes(model)
    return [
        {name: array.astype(dtypes[name]) for name, array in batch.items() if name in dtypes}
        for batch in batches
    ]


def _check_output(
    name: str, reference: np.ndarray, compiled: np.ndarray, sqnr_min_db: float, label: str
) -> OutputCheck:
    """One compiled output against the reference; the most specific problem wins."""
    if compiled.shape != reference.shape:
        return OutputCheck(
            name, math.nan, f"has shape {compiled.shape}; the {label} gives {reference.shape}", "shape"
        )
    values = np.asarray(compiled, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    sqnr = sqnr_db(ref, values)
    if not np.all(np.isfinite(values)):
        return OutputCheck(name, sqnr, "holds NaN or Inf", "NaN/Inf")
    channels = check_channels(ref, values)
    whole = _output_check(name, ref, values, sqnr, sqnr_min_db, label)
    if whole.problem:  # one warning per output: the channels add nothing to it
        return dataclasses.replace(whole, channels=channels)
    problems = tuple(
        f"{problem} (the output's SQNR {_db(sqnr)} hides them)"
        for channel in channels
        for problem in channel_problems(channel, label)
    )
    flag = ", ".join(_channel_flag(channel) for channel in channels if channel.dead or channel.low)
    return OutputCheck(name, sqnr, flag=flag, channels=channels, channel_problems=problems)


def _channel_flag(channel: ChannelCheck) -> str:
    """E.g. '8 dead, 1 low on axis 1', for the summary line."""
    counts = [f"{len(channel.dead)} dead"] if channel.dead else []
    counts += [f"{len(channel.low)} low"] if channel.low else []
    return f"{', '.join(counts)} on axis {channel.axis}"


def _output_check(
    name: str, ref: np.ndarray, values: np.ndarray, sqnr: float, sqnr_min_db: float, label: str
) -> OutputCheck:
    """The output as a whole (finite, same shape as the reference)."""
    if values.size and np.ptp(values) == 0.0 and np.ptp(ref) > 0.0:
        what = "all zero" if not values.any() else "constant"
        value = "" if what == "all zero" else f" ({values.flat[0]:.6g})"
        problem = f"is {what}{value} while the {label}'s is not (SQNR {_db(sqnr)})"
        return OutputCheck(name, sqnr, problem, what)
    if sqnr < sqnr_min_db:
        problem = (
            f"has SQNR {_db(sqnr)} against the {label}, below the {sqnr_min_db:g} dB threshold "
            "(--check-sqnr-min)"
        )
        return OutputCheck(name, sqnr, problem, f"< {sqnr_min_db:g} dB")
    return OutputCheck(name, sqnr)


def _first_line(exc: QdqcError) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def run_selfcheck(
    reference: onnx.ModelProto,
    compiled: onnx.ModelProto,
    batches: list[dict],
    sqnr_min_db: float = DEFAULT_SQNR_MIN_DB,
    reference_label: str = "float model",
) -> SelfCheck:
    """Compare ``compiled`` with ``reference`` on ``batches`` (inputs as ``reference`` takes them).

    Problems of the reference (onnxruntime cannot run it, it yields NaN) skip the check with the reason;
    problems of the compiled model are reported as warnings on the result.
    """
    start = time.perf_counter()
    samples = sum(int(next(iter(batch.values())).shape[0]) for batch in batches)
    if not samples:
        return skipped_check("no samples to run", sqnr_min_db)
    try:
        expected = run_outputs(reference, batches)
    except QdqcError as exc:
        return skipped_check(f"the {reference_label}: {_first_line(exc)}", sqnr_min_db)
    cut_before = tuple(onnxruntime_part(reference)[1])
    base = SelfCheck(samples, sqnr_min_db, reference_label, cut_before=cut_before)
    for name, values in expected.items():
        if not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
            return skipped_check(f"the {reference_label}'s output {name!r} holds NaN or Inf", sqnr_min_db)
    try:
        actual = run_outputs(compiled, _cast_to_inputs(batches, compiled))
    except QdqcError as exc:
        return _with(base, error=f"the compiled model: {_first_line(exc)}", start=start)
    missing = [name for name in expected if name not in actual]
    if missing:
        return _with(
            base, error=f"the compiled model lacks output(s) {', '.join(map(repr, missing))}", start=start
        )
    outputs = tuple(
        _check_output(name, ref, actual[name], sqnr_min_db, reference_label) for name, ref in expected.items()
    )
    return _with(base, outputs=outputs, start=start)


def _with(base: SelfCheck, start: float, **changes) -> SelfCheck:
    return dataclasses.replace(base, seconds=time.perf_counter() - start, **changes)


def _db(value: float) -> str:
    return f"{value:.2f} dB" if math.isfinite(value) else f"{value} dB"


def format_selfcheck(check: SelfCheck) -> str:
    """The summary line: per-output SQNR (or why the check was skipped)."""
    if check.skipped:
        return f"self-check: skipped ({check.skipped})"
    head = (
        f"self-check: SQNR against the {check.reference} on {check.samples} sample(s) "
        f"(onnxruntime, {check.seconds:.2f} s):"
    )
    where = (
        f"; compared before {', '.join(check.cut_before)}, which onnxruntime cannot run"
        if check.cut_before
        else ""
    )
    if check.error:
        return f"{head} FAILED, {check.error}"
    parts = [f"{out.name} {_db(out.sqnr_db)}{f' [{out.flag}]' if out.flag else ''}" for out in check.outputs]
    verdict = f" ({len(check.warnings)} warning(s))" if check.warnings else ""
    return f"{head} {', '.join(parts)}{where}{verdict}"


def _json_number(value: float) -> float | str:
    """JSON has no infinities or NaN: they become 'inf', '-inf', 'nan'; others round to 0.001 dB."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(value, 3)


def _channels_json(check: ChannelCheck) -> dict:
    """Compact: the counts and first indices of the dead and low channels, and the worst channel."""
    return {
        "axis": check.axis,
        "size": check.size,
        "dead": {"count": len(check.dead), "first": list(check.dead[:JSON_CHANNELS])},
        "low_sqnr": {"count": len(check.low), "first": list(check.low[:JSON_CHANNELS])},
        "worst": None if check.worst < 0 else {"index": check.worst, "sqnr_db": _json_number(check.worst_db)},
    }


def selfcheck_to_json(check: SelfCheck) -> dict:
    """The check as JSON-ready data (no timing, so the same inputs give the same bytes)."""
    status = "skipped" if check.skipped else ("warning" if check.warnings else "ok")
    return {
        "status": status,
        "skipped_reason": check.skipped or None,
        "reference": check.reference,
        "samples": check.samples,
        "sqnr_min_db": check.sqnr_min_db,
        "compared_before": list(check.cut_before),
        "error": check.error or None,
        "outputs": [
            {
                "name": out.name,
                "sqnr_db": _json_number(out.sqnr_db),
                "problem": out.problem or None,
                "channels": [_channels_json(channel) for channel in out.channels],
            }
            for out in check.outputs
        ],
        "warnings": check.warnings,
    }

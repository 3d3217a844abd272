"""`qdqc explain`: what a user needs before flashing a device, from one compiled model.

The recipe the model records (target, calibration, pipeline, qdqc version), the lint result, the fusion
prediction (INT8 MAC share, requantizations), the exact trtexec line for the recorded target (the one
`qdqc build MODEL --print-trtexec` prints) and the next step, `qdqc report-engine`, which compares the
engine TensorRT built with this prediction.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from qdq_compiler.collector import collector_paused
from qdq_compiler.errors import ChecksFailed, QdqcError
from qdq_compiler.ir.op_facts import is_dequantize, is_quantize
from qdq_compiler.targets.constant_arrays import ConstantArrays
from qdq_compiler.targets.fusion import FusionReport, format_report, predict_fusions, report_to_json
from qdq_compiler.targets.lint import lint_model
from qdq_compiler.targets.model_build import DEFAULT_DEVICE, default_engine_path, default_trtexec_command
from qdq_compiler.targets.recipe import Recipe, read_recipe
from qdq_compiler.targets.trtexec import default_artifacts, format_command


@dataclass
class Explanation:
    """Everything `qdqc explain` prints, as data."""

    model: str
    recipe: Recipe
    lint_errors: int
    lint_warnings: int
    fusion: FusionReport
    trt_major: int
    trtexec: str | None  # None when the line needs input from the user (see trtexec_problem)
    trtexec_problem: str | None
    build_notes: list[str]
    next_step: str


def explain_model(model_path: str, model: ir.Model) -> Explanation:
    """Explain a Q/DQ model; raise ChecksFailed (exit 1) for a model without Q/DQ."""
    if not any(is_quantize(node) or is_dequantize(node) for node in model.graph):  # stops at the first
        raise ChecksFailed(
            f"{model_path} holds no Q/DQ: a float model, nothing TensorRT would run in INT8; compile it "
            f"first (qdqc compile {shlex.quote(model_path)} --calib DATA -o OUT.onnx) and explain the output"
        )
    with collector_paused():  # one collection after the lint and the prediction, not one between them
        return _explain(model_path, model, ConstantArrays())


def _explain(model_path: str, model: ir.Model, constants: ConstantArrays) -> Explanation:
    """explain_model's work; `constants` decodes each constant once for the lint and the prediction."""
    violations = lint_model(model, constants)
    errors = sum(1 for v in violations if v.severity == "error")
    try:
        command, plan = default_trtexec_command(model_path, model)
        trtexec, problem, trt_major, notes = format_command(command), None, plan.trt_major, plan.notes
    except QdqcError as exc:  # e.g. dynamic inputs: the line needs --shapes
        trtexec, problem, trt_major, notes = None, str(exc), read_recipe(model).trt_major or 10, []
    layers = default_artifacts(default_engine_path(model_path))["layer_info"]
    return Explanation(
        model=model_path,
        recipe=read_recipe(model),
        lint_errors=errors,
        lint_warnings=len(violations) - errors,
        fusion=predict_fusions(model, constants=constants),
        trt_major=trt_major,
        trtexec=trtexec,
        trtexec_problem=problem,
        build_notes=notes,
        next_step=f"qdqc report-engine {shlex.quote(str(layers))} --model {shlex.quote(model_path)}",
    )


def format_explanation(explained: Explanation) -> str:
    """The explanation as text: recipe, lint, prediction table, the trtexec line and the next step."""
    report = explained.fusion
    quoted = shlex.quote(explained.model)
    lines = [f"model: {explained.model}"]
    lines += [f"  {label}: {text}" for label, text in explained.recipe.lines()]
    lint = f"  lint: {explained.lint_errors} error(s), {explained.lint_warnings} warning(s)"
    if explained.lint_errors or explained.lint_warnings:
        lint += f" (list them: qdqc lint {quoted})"
    lines += [
        lint,
        f"  predicted INT8 MAC share: {100 * report.int8_mac_share:.1f}%, "
        f"requantizations: {len(report.requantizations)}",
        "",
        format_report(report),
        "",
        f"Build the engine on the device (TensorRT {explained.trt_major}, {DEFAULT_DEVICE}; "
        f"`qdqc build {quoted}` does the same with TensorRT's Python API; --target/--trt/--dla for others):",
    ]
    lines += [f"  note: {note}" for note in explained.build_notes]
    if explained.trtexec is not None:
        lines.append(f"  {explained.trtexec}")
    else:
        lines.append(
            f"  (no line yet: {explained.trtexec_problem}; then `qdqc build {quoted} --shapes ... "
            "--print-trtexec` prints it)"
        )
    lines += ["Then compare the engine's layers with this prediction:", f"  {explained.next_step}"]
    return "\n".join(lines)


def explanation_to_json(explained: Explanation) -> dict[str, Any]:
    """The explanation as a JSON-ready dict: the fusion prediction's fields plus the recipe and next steps."""
    data = report_to_json(explained.fusion)
    data.update(
        model=explained.model,
        recipe=explained.recipe.to_json(),
        lint={"errors": explained.lint_errors, "warnings": explained.lint_warnings},
        trt_major=explained.trt_major,
        trtexec=explained.trtexec,
        trtexec_problem=explained.trtexec_problem,
        build_notes=explained.build_notes,
        next_step=explained.next_step,
    )
    return data

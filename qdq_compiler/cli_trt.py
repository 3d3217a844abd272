"""`qdqc lint`, `explain`, `build` and `report-engine`: the TensorRT-facing commands."""

from __future__ import annotations

import json
import logging

import click

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import count_qdq, load_model
from qdq_compiler.paths import check_output_file, model_files, refuse_overwriting_inputs, write_error
from qdq_compiler.targets.model_build import DEFAULT_DEVICE, default_engine_path, plan_model_build
from qdq_compiler.targets.trtexec import TARGETS, Target


@click.command()
@click.argument("model", type=str)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too (and on a model without Q/DQ).")
def lint(model: str, strict: bool) -> None:
    """Check a Q/DQ model against TensorRT's Q/DQ rules.

    One line per violation, then one summary line; exit 1 on errors (and on warnings with --strict), 2 when
    MODEL cannot be read. The target the model records (qdqc compile --target) decides the build mode the
    rules assume; a model without a record (another tool's) is checked for a weakly typed TensorRT 10 build
    too. A model without any Q/DQ (a float model) breaks no rule: a warning and exit 0 (1 with --strict).
    """
    from qdq_compiler.targets import lint_model

    loaded = load_model(model)
    violations = lint_model(loaded)
    for violation in violations:
        click.echo(str(violation))
    errors = [v for v in violations if v.severity == "error"]
    warnings = [v for v in violations if v.severity != "error"]
    holds_qdq = any(count_qdq(loaded.graph))
    if not holds_qdq:
        logging.getLogger("qdqc").warning(
            "%s holds no Q/DQ: nothing to lint (a float model; lint the output of `qdqc compile`)", model
        )
    click.echo(f"{model}: {len(errors)} error(s), {len(warnings)} warning(s)", err=True)  # the one summary
    if errors or (strict and (warnings or not holds_qdq)):
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("model", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print the same facts as JSON.")
def explain(model: str, as_json: bool) -> None:
    """What to know before flashing: target, lint, fusions.

    MODEL's recorded target, calibration and pipeline, its lint result, the predicted TensorRT fusion (INT8
    layers, requantizations, INT8 MAC share), the trtexec line for the recorded target and the
    `qdqc report-engine` step that checks the engine against the prediction.

    Exit 1 for a model without Q/DQ (nothing to explain).
    """
    from qdq_compiler.targets.explain import explain_model, explanation_to_json, format_explanation

    explained = explain_model(model, load_model(model))
    if as_json:
        click.echo(json.dumps(explanation_to_json(explained), indent=2, sort_keys=True))
    else:
        click.echo(format_explanation(explained))


@click.command()
@click.argument("model", type=str)
@click.option(
    "--target", type=click.Choice(TARGETS), default=DEFAULT_DEVICE, show_default=True, help="The device."
)
@click.option(
    "--trt",
    "trt_major",
    type=click.Choice(["10", "11"]),
    default=None,
    help="TensorRT major version on the device [default: the installed one for a build; for --print-trtexec "
    "the model's recorded target (trt11: 11), else 10].",
)
@click.option("--dla", "dla_core", type=click.IntRange(min=0), default=None, help="DLA core (Orin only).")
@click.option(
    "--shapes",
    default=None,
    help="Input shapes, checked against the model: 'images:1x3x640x640' or 'images:1..8x3x640x640' "
    "[default: the model's static shapes; required for inputs with dynamic dimensions].",
)
@click.option(
    "--strongly-typed/--weakly-typed",
    default=None,
    help="TensorRT 10 build mode [default: weakly typed; strongly typed for a model compiled for trt11, "
    "which refuses --weakly-typed; TensorRT 11 is always strongly typed].",
)
@click.option(
    "--workspace",
    "workspace_mib",
    type=click.IntRange(min=1),
    default=None,
    help="Workspace MiB [default: TensorRT's].",
)
@click.option("--timing-cache", default=None, help="Timing cache file, read and updated.")
@click.option(
    "-o", "--engine", "engine_path", default=None, help="Engine file (default: MODEL with .engine)."
)
@click.option("--print-trtexec", is_flag=True, help="Only print the trtexec command for the device.")
def build(
    model: str,
    target: Target,
    trt_major: str | None,
    dla_core: int | None,
    shapes: str | None,
    strongly_typed: bool | None,
    workspace_mib: int | None,
    timing_cache: str | None,
    engine_path: str | None,
    print_trtexec: bool,
) -> None:
    """Build a TensorRT engine, or print the trtexec command.

    The engine is built with TensorRT's Python API, with a layer report beside it for `qdqc report-engine`.
    The build mode follows the target MODEL records (qdqc compile --target). The build uses the installed
    TensorRT (--trt, when given, must match it); the printed trtexec line is for --trt, else the recorded
    target's version. Without TensorRT installed, prints the trtexec line to run on the device and exits 4.
    """
    from qdq_compiler.targets import format_command, trtexec_command
    from qdq_compiler.targets.engine import TensorRTUnavailable, build_engine, import_tensorrt, tensorrt_major

    loaded = load_model(model)  # a clear error for a missing or corrupt model before anything else
    asked = int(trt_major) if trt_major else None
    plan = plan_model_build(model, loaded, asked, strongly_typed, shapes)
    engine = engine_path or default_engine_path(model)
    refuse_overwriting_inputs({"-o": engine}, model_files(model))
    command = trtexec_command(
        model,
        target,
        plan.trt_major,
        dla_core,
        shapes,
        engine,
        plan.strongly_typed,
        workspace_mib=workspace_mib,
        timing_cache=timing_cache,
    )
    if print_trtexec:
        _warn(plan.notes)
        click.echo(format_command(command))
        return
    check_output_file(engine)
    if timing_cache is not None:
        check_output_file(timing_cache, "--timing-cache")  # read, then updated
    try:
        installed = tensorrt_major(import_tensorrt())
    except TensorRTUnavailable as missing:
        _warn(plan.notes)
        click.echo(f"qdqc: {missing}", err=True)
        click.echo("build on the device instead with:", err=True)
        click.echo(format_command(command))
        raise click.exceptions.Exit(missing.exit_code) from None  # 4: TensorRT is not installed
    plan = plan_model_build(model, loaded, asked or installed, strongly_typed, shapes)  # --trt must match
    _warn(plan.notes)
    try:
        built = build_engine(
            model,
            engine,
            target=target,
            trt_major=plan.trt_major,
            strongly_typed=plan.strongly_typed,
            dla_core=dla_core,
            shapes=shapes,
            workspace_mib=workspace_mib,
            timing_cache=timing_cache,
        )
    except OSError as exc:  # writing the engine, layer report or timing cache: disk full, read-only, ...
        raise write_error(exc.filename or engine, exc) from None
    click.echo(
        f"wrote {built.engine_path} and layer report {built.layer_info_path} (TensorRT {built.trt_version}); "
        f"next: qdqc report-engine {built.layer_info_path} --model {model}"
    )


def _warn(notes: list[str]) -> None:
    for note in notes:
        logging.getLogger("qdqc").warning("%s", note)


@click.command("report-engine")
@click.argument("layers_json", type=str)
@click.option(
    "--model", default=None, help="The ONNX model the engine was built from, for a side-by-side view."
)
@click.option("--profile", default=None, help="trtexec --exportProfile JSON, for per-layer times.")
def report_engine(layers_json: str, model: str | None, profile: str | None) -> None:
    """Compare an engine's layer report with the prediction.

    Shows which engine layers run INT8/FP16 and where reformats sit, from the layer information JSON that
    `qdqc build` or `trtexec --exportLayerInfo` writes; with --model, beside `qdqc explain`'s prediction.
    """
    from qdq_compiler.targets import (
        compare_with_prediction,
        format_comparison,
        format_layer_report,
        predict_fusions,
        read_layer_report,
    )

    try:
        report = read_layer_report(layers_json, profile)
    except (OSError, json.JSONDecodeError) as exc:
        raise QdqcError(f"cannot read layer report {layers_json}: {exc}") from None
    click.echo(format_layer_report(report))
    if model:
        click.echo("")
        click.echo(format_comparison(compare_with_prediction(report, predict_fusions(load_model(model)))))

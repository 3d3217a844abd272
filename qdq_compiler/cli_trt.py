"""`qdqc lint`, `explain`, `build` and `report-engine`: the TensorRT-facing commands."""

from __future__ import annotations

import json
import logging

import click

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import count_qdq, load_model
from qdq_compiler.paths import check_output_file, model_files, refuse_overwriting_inputs, write_error


@click.command()
@click.argument("model", type=str)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too (and on a model without Q/DQ).")
def lint(model: str, strict: bool) -> None:
    """Check a Q/DQ ONNX model against TensorRT's rules: one line per violation; exit 1 on errors.

    A model without any Q/DQ (a float model) breaks no rule: it gets a warning and exit 0 (1 with --strict).
    """
    from qdq_compiler.targets import format_violations, lint_model

    loaded = load_model(model)
    violations = lint_model(loaded)
    if violations:
        click.echo(format_violations(violations))
    errors = [v for v in violations if v.severity == "error"]
    warnings = [v for v in violations if v.severity != "error"]
    holds_qdq = any(count_qdq(loaded.graph))
    if not holds_qdq:
        logging.getLogger("qdqc").warning(
            "%s holds no Q/DQ: nothing to lint (a float model; lint the output of `qdqc compile`)", model
        )
    click.echo(f"{model}: {len(errors)} error(s), {len(warnings)} warning(s)", err=True)
    if errors or (strict and (warnings or not holds_qdq)):
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("model", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
def explain(model: str, as_json: bool) -> None:
    """Predict how TensorRT will fuse MODEL: INT8 layers, requantizations, reformats, INT8 MAC share."""
    from qdq_compiler.targets import format_report, predict_fusions, report_to_json

    report = predict_fusions(load_model(model))
    if as_json:
        click.echo(json.dumps(report_to_json(report), indent=2, sort_keys=True))
    else:
        click.echo(format_report(report))


@click.command()
@click.argument("model", type=str)
@click.option("--target", type=click.Choice(["orin", "thor", "x86"]), default="orin", show_default=True)
@click.option(
    "--trt",
    "trt_major",
    type=click.Choice(["10", "11"]),
    default="10",
    show_default=True,
    help="TensorRT major version on the device.",
)
@click.option("--dla", "dla_core", type=click.IntRange(min=0), default=None, help="DLA core (Orin only).")
@click.option("--shapes", default=None, help="Input shapes: 'images:1x3x640x640' or 'images:1..8x3x640x640'.")
@click.option(
    "--strongly-typed/--weakly-typed", default=None, help="TensorRT 10 build mode (11: always strong)."
)
@click.option("--workspace", "workspace_mib", type=click.IntRange(min=1), default=None, help="Workspace MiB.")
@click.option("--timing-cache", default=None, help="Timing cache file, read and updated.")
@click.option(
    "-o", "--engine", "engine_path", default=None, help="Engine file (default: MODEL with .engine)."
)
@click.option("--print-trtexec", is_flag=True, help="Only print the trtexec command for the device.")
def build(
    model: str,
    target: str,
    trt_major: str,
    dla_core: int | None,
    shapes: str | None,
    strongly_typed: bool | None,
    workspace_mib: int | None,
    timing_cache: str | None,
    engine_path: str | None,
    print_trtexec: bool,
) -> None:
    """Build a TensorRT engine from MODEL with the tensorrt Python API, or print the trtexec command."""
    from qdq_compiler.targets import format_command, trtexec_command
    from qdq_compiler.targets.engine import TensorRTUnavailable, build_engine

    load_model(model)  # a clear error for a missing or corrupt model before anything else
    engine = engine_path or str(model).rsplit(".onnx", 1)[0] + ".engine"
    refuse_overwriting_inputs({"-o": engine}, model_files(model))
    command = trtexec_command(
        model,
        target,
        int(trt_major),
        dla_core,
        shapes,
        engine,
        strongly_typed,
        workspace_mib=workspace_mib,
        timing_cache=timing_cache,
    )
    if print_trtexec:
        click.echo(format_command(command))
        return
    check_output_file(engine)
    if timing_cache is not None:
        check_output_file(timing_cache, "--timing-cache")  # read, then updated
    try:
        built = build_engine(
            model,
            engine,
            target=target,
            trt_major=int(trt_major),
            strongly_typed=strongly_typed,
            dla_core=dla_core,
            shapes=shapes,
            workspace_mib=workspace_mib,
            timing_cache=timing_cache,
        )
    except TensorRTUnavailable as missing:
        click.echo(f"qdqc: {missing}", err=True)
        click.echo("build on the device instead with:", err=True)
        click.echo(format_command(command))
        raise click.exceptions.Exit(missing.exit_code) from None  # 4: TensorRT is not installed
    except OSError as exc:  # writing the engine, layer report or timing cache: disk full, read-only, ...
        raise write_error(exc.filename or engine, exc) from None
    click.echo(
        f"wrote {built.engine_path} and layer report {built.layer_info_path} (TensorRT {built.version})"
    )


@click.command("report-engine")
@click.argument("layers_json", type=str)
@click.option(
    "--model", default=None, help="The ONNX model the engine was built from, for a side-by-side view."
)
@click.option("--profile", default=None, help="trtexec --exportProfile JSON, for per-layer times.")
def report_engine(layers_json: str, model: str | None, profile: str | None) -> None:
    """Show which engine layers run INT8/FP16 and where reformats sit (trtexec --exportLayerInfo JSON)."""
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

"""`qdqc sensitivity`: which quantized layers cost the most accuracy, measured in onnxruntime."""

from __future__ import annotations

import json

import click

from qdq_compiler.cli_options import (
    DEFAULT_COMPILE_PIPELINE,
    calibration_options,
    placement_options,
    prepare_pipeline,
    report_option,
    target_option,
)
from qdq_compiler.cli_recovery import engine_options, engine_runtime, validate_auto
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import load_passes
from qdq_compiler.report.commands import check_report_dir, sensitivity_report


@click.command()
@click.argument("model", type=str)
@click.option(
    "--eval",
    "eval_data",
    default=None,
    metavar="DATA",
    help="Inputs to measure on (default: the --calib data). Held-out data gives the honest figure.",
)
@click.option(
    "--eval-limit", type=click.IntRange(min=1), default=8, show_default=True, help="Samples to measure on."
)
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Keep the 1..TOP most sensitive layers float together and measure each step.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@calibration_options
@placement_options
@target_option
@report_option
@engine_options
@click.pass_context
def sensitivity(
    ctx: click.Context, model: str, eval_data: str | None, eval_limit: int, top: int, as_json: bool, **opts
) -> None:
    """Rank MODEL's INT8 layers by the accuracy they cost.

    Each layer's score is the SQNR gained when it alone stays float; compile's options apply. The
    variants run in --workers processes (default: one per core) or on Ray (--ray).
    """
    from qdq_compiler.accuracy import analyze_sensitivity, format_sensitivity, sensitivity_to_json
    from qdq_compiler.calib.progress import Progress
    from qdq_compiler.cli_options import open_evaluation_data
    from qdq_compiler.search import EvalSource

    source = eval_data or opts["calib"]
    if source is None:
        raise QdqcError("sensitivity needs inputs to measure on: --eval DATA or --calib DATA")
    quiet = ctx.obj["quiet"]
    check_report_dir(opts["report_dir"])
    load_passes()
    manager, pass_ctx = prepare_pipeline(model, DEFAULT_COMPILE_PIPELINE, opts, quiet)
    float_proto = to_proto(load_model(model))
    opened = open_evaluation_data(model, source, opts["batch_size"])  # a bad path: one line, before any work
    if opened.num_samples == 0:
        raise QdqcError(f"evaluation data ({'--eval' if eval_data else '--calib'}): no samples in {source}")
    batches = EvalSource(source, opts["batch_size"], eval_limit)  # each worker reads them
    with engine_runtime(pass_ctx, opts):
        validate_auto(model, manager, pass_ctx, opts, eval_data)  # --method auto: chosen once, reused
        with Progress(desc="sensitivity", unit="variants", quiet=quiet) as bar:

            def advance(done: int, total: int, what: str) -> None:
                bar.total = total
                bar.update(done - bar.done)

            report = analyze_sensitivity(
                float_proto,
                manager,
                pass_ctx,
                batches,
                top=top,
                progress=advance,
                workers=opts["workers"],
                ray=opts["ray"],
            )
    if as_json:
        click.echo(json.dumps(sensitivity_to_json(report), indent=2, sort_keys=True))
    else:
        click.echo(format_sensitivity(report))
    if opts["report_dir"]:
        sensitivity_report(opts["report_dir"], model, manager, pass_ctx, report, quiet, err=as_json)

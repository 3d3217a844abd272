"""The `qdqc` command line: compile, calibrate, opt, passes, inspect, demo (TensorRT commands in cli_trt,
`sensitivity` in cli_accuracy)."""

from __future__ import annotations

import errno
import logging
import shlex
import sys
from pathlib import Path

import click

import qdq_compiler
from qdq_compiler.cli_help import PassDefaultOption, exit_codes_epilog
from qdq_compiler.cli_options import (
    DEFAULT_COMPILE_PIPELINE,
    calibration_data_options,
    calibration_options,
    open_evaluation_data,
    output_options,
    placement_options,
    prepare_pipeline,
    report_option,
)
from qdq_compiler.cli_recovery import engine_steps, recovery_options
from qdq_compiler.cli_replay import ReplayFlags, prepare_opt_calibration
from qdq_compiler.cli_selfcheck import CompileSelfCheck, selfcheck_options
from qdq_compiler.errors import (
    EXIT_ABORTED,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL_ERROR,
    EXIT_OK,
    QdqcError,
)
from qdq_compiler.ir import count_qdq, dump, load_model, op_counts, save_model, to_proto
from qdq_compiler.ir.printer import format_type
from qdq_compiler.ir.state import state_key, summarize_state
from qdq_compiler.paths import check_output_dir, preflight
from qdq_compiler.pm import PassContext, PassManager, all_passes, all_pipelines, load_passes, pipeline_options
from qdq_compiler.pm.instruments import (
    IRDumpDir,
    PassStatistics,
    PrintIR,
    Reproducer,
    Timing,
    VerifyEach,
    format_timing,
)
from qdq_compiler.pm.options import field_types, format_value, kebab
from qdq_compiler.quant.decisions import DECISIONS_STATE
from qdq_compiler.quant.imported import IMPORTED_AMAX_STATE
from qdq_compiler.report.commands import check_report_dir, compile_report
from qdq_compiler.summary import compile_summary

logger = logging.getLogger("qdqc")

# OSErrors that the machine causes, not qdqc: no space or quota, read-only, no permission, too large a file.
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)


def instrument_options(fn):
    """Options shared by every command that runs a pipeline."""
    options = [
        click.option(
            "--verify-each", is_flag=True, help="Verify the IR (and run the onnx checker) after every pass."
        ),
        click.option(
            "--timing",
            is_flag=True,
            help="Print one table on stderr: wall time and share per pass (compile: also the self-check).",
        ),
        click.option("--pass-stats", is_flag=True, help="Print each pass's counters."),
        click.option(
            "--print-ir-after", multiple=True, metavar="NAME|all", help="Print the IR after a pass."
        ),
        click.option(
            "--print-ir-after-change", is_flag=True, help="Print the IR after every pass that changed it."
        ),
        click.option(
            "--ir-dump-dir", type=click.Path(file_okay=False), help="Write NNN_<pass>.txt dumps here."
        ),
        click.option(
            "--reproducer-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="On failure, save the failing pass's input and the rest of the pipeline here.",
        ),
        click.option("--load-pass-plugin", multiple=True, metavar="FILE|MODULE", help="Load extra passes."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=exit_codes_epilog())
@click.version_option(qdq_compiler.__version__, prog_name="qdqc")
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug and tracebacks).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """qdqc: compile FP32 ONNX CNNs into explicit-quantized (Q/DQ) ONNX for TensorRT INT8 on Jetson."""
    level = (
        logging.ERROR
        if quiet
        else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    logging.basicConfig(level=level, format="qdqc: %(levelname)s: %(message)s", stream=sys.stderr, force=True)
    ctx.obj = {"verbose": verbose, "quiet": quiet}


def _instruments_for(manager: PassManager, opts: dict, print_timing: bool) -> Timing:
    """Attach the instruments the options ask for; a Timing instrument is always attached (returned), and
    prints the `--timing` table when the pipeline ends if `print_timing`."""
    instruments = manager.instruments
    if opts["verify_each"]:
        instruments.append(VerifyEach())
    if opts["print_ir_after"] or opts["print_ir_after_change"]:
        instruments.append(PrintIR(tuple(opts["print_ir_after"]), opts["print_ir_after_change"]))
    if opts["ir_dump_dir"]:
        instruments.append(IRDumpDir(opts["ir_dump_dir"]))
    if opts["reproducer_dir"]:
        replay = ReplayFlags(manager, opts)
        instruments.append(Reproducer(opts["reproducer_dir"], manager.remaining_pipeline, replay))
    timing = Timing(print_table=print_timing)
    instruments.append(timing)
    if opts["pass_stats"]:
        instruments.append(PassStatistics())
    return timing


def _instrument_folders(opts: dict) -> dict[str, str | None]:
    """The folders the instrument options write into, by option (None: not given)."""
    return {"--ir-dump-dir": opts["ir_dump_dir"], "--reproducer-dir": opts["reproducer_dir"]}


def _run_pipeline(
    model_path: str,
    output: str,
    pipeline: str | PassManager,
    opts: dict,
    quiet: bool,
    ctx: PassContext | None = None,
    defer_timing: bool = False,
) -> tuple:
    """Load, run the pipeline with the requested instruments, save atomically (or print the IR for '-').

    Returns (model, timing). `--timing`'s table is printed when the pipeline ends, unless `defer_timing`
    (compile prints it after its self-check, with the self-check's time).
    """
    source, target = Path(model_path), Path(output)
    model = load_model(source)
    manager = pipeline if isinstance(pipeline, PassManager) else PassManager(pipeline)
    timing = _instruments_for(manager, opts, print_timing=bool(opts["timing"]) and not defer_timing)
    manager.run(model, ctx or PassContext())
    if output == "-":
        click.echo(dump(model), nl=False)
        return model, timing
    save_model(model, target)
    if not quiet:
        q, dq = count_qdq(model.graph)
        click.echo(
            f"wrote {target} ({len(model.graph)} nodes, {q} Q / {dq} DQ); pipeline: {manager.pipeline_text}"
        )
    return model, timing


@cli.command()
@click.argument("model", type=str)
@click.option("-o", "--output", required=True, help="Where to write the compiled model.")
@click.option(
    "--pipeline", default=None, help=f"Pipeline text or named pipeline (default: {DEFAULT_COMPILE_PIPELINE})."
)
@click.option(
    "--missing-scales",
    type=click.Choice(["error", "float"]),
    default=None,
    cls=PassDefaultOption,
    pass_option=("import-scales", "missing"),
    help="trt-int8-from-qdq: a tensor qdqc quantizes but the source model did not is an error, or stays "
    "float (import-scales{missing=...}).",
)
@calibration_options
@placement_options
@output_options
@selfcheck_options
@report_option
@recovery_options
@instrument_options
@click.pass_context
def compile(ctx: click.Context, model: str, output: str, pipeline: str | None, **opts) -> None:
    """Compile a float ONNX MODEL to Q/DQ ONNX for TensorRT INT8.

    Runs the pipeline (default: trt-int8) and writes the model to -o, then checks it numerically against
    MODEL in onnxruntime and prints a summary.
    """
    outputs = {"-o": output, "--summary-json": opts["summary_json"]}
    preflight(model, opts, outputs, _instrument_folders(opts))
    check_report_dir(opts["report_dir"])
    load_passes(opts["load_pass_plugin"])  # built-ins, then plugins, before the pipeline is read
    manager, pass_ctx = prepare_pipeline(model, pipeline or DEFAULT_COMPILE_PIPELINE, opts, ctx.obj["quiet"])
    if opts["eval_data"] is not None:  # --method auto validates on it; the fallback search measures on it
        open_evaluation_data(model, opts["eval_data"], opts["batch_size"])  # a bad path: one line, early
    self_check = CompileSelfCheck(model, output, manager, pass_ctx, opts)  # its option errors come first
    search = engine_steps(model, manager, pass_ctx, opts, ctx.obj["quiet"])  # --method auto, --target-sqnr
    compiled, timing = _run_pipeline(
        model, output, manager, opts, ctx.obj["quiet"], pass_ctx, defer_timing=True
    )
    check = self_check.run(compiled)
    if not ctx.obj["quiet"]:
        click.echo(compile_summary(compiled, check))
    steps = [("(self-check)", check.seconds)] if check is not None and not check.skipped else []
    if opts["report_dir"]:
        stats, passes = pass_ctx.calibration_stats, manager.passes
        seconds = compile_report(
            opts["report_dir"], model, output, compiled, stats, passes, check, ctx.obj["quiet"], search
        )
        steps.append(("(report)", seconds))
    if opts["timing"]:
        click.echo(format_timing(timing.rows + steps), err=True)
    self_check.finish(check, compiled, manager.pipeline_text)


@cli.command()
@click.argument("model", type=str)
@click.option("-o", "--output", required=True, help="Where to write the statistics (calibration cache).")
@calibration_data_options(with_cache=False)
@placement_options
@click.pass_context
def calibrate(ctx: click.Context, model: str, output: str, **opts) -> None:
    """Save MODEL's calibration statistics for compile to reuse.

    Runs the compile pipeline (trt-int8) over --calib DATA once, up to and including calibrate, and
    writes the statistics to -o; `compile --calib-cache` reuses them with any calibration method. The
    placement flags choose which tensors have statistics; the method, target and weight flags act after
    calibrate, so compile takes them.
    """
    from qdq_compiler.calib import cache_key, save_cache

    if not opts["calib"]:
        raise QdqcError("calibrate needs --calib DATA (images folder, .npy or .npz)")
    preflight(model, opts, {"-o": output})
    load_passes()
    opts = {**opts, "calib_cache": None}
    quiet = ctx.obj["quiet"]
    manager, pass_ctx = prepare_pipeline(model, DEFAULT_COMPILE_PIPELINE, opts, quiet, stop_after="calibrate")
    manager.run(load_model(model), pass_ctx, stamp=False)
    float_proto = to_proto(load_model(model))
    num_bins = manager.passes[-1].options.num_bins
    save_cache(
        output, pass_ctx.calibration_stats, cache_key(float_proto, pass_ctx.calibration_data, num_bins)
    )
    if not ctx.obj["quiet"]:
        click.echo(f"wrote statistics of {len(pass_ctx.calibration_stats)} tensors to {output}")


@cli.command()
@click.argument("model", type=str)
@click.option("-o", "--output", required=True, help="Output ONNX file, or '-' to print the IR dump.")
@click.option("--pipeline", required=True, help="Pipeline text, e.g. 'canonicalize,fold-bn'.")
@calibration_data_options(with_two_pass=False)
@instrument_options
@click.pass_context
def opt(ctx: click.Context, model: str, output: str, pipeline: str, **opts) -> None:
    """Run any pipeline on MODEL (IR to IR, like mlir-opt).

    The pipeline text runs as written; --calib/--calib-cache feed its calibrate, if it has one.
    """
    preflight(model, opts, {"-o": output}, _instrument_folders(opts))
    load_passes(opts["load_pass_plugin"])  # built-ins, then plugins, before the pipeline is read
    manager = PassManager(pipeline)
    pass_ctx = PassContext(progress=not ctx.obj["quiet"])
    prepare_opt_calibration(model, manager, opts, pass_ctx)
    _run_pipeline(model, output, manager, opts, ctx.obj["quiet"], pass_ctx)


@cli.command()
@click.option("--load-pass-plugin", multiple=True, metavar="FILE|MODULE", help="Load extra passes first.")
def passes(load_pass_plugin: tuple[str, ...]) -> None:
    """List the passes with their options, and named pipelines."""
    load_passes(load_pass_plugin)
    for name, cls in all_passes().items():
        click.echo(f"{name}: {cls.summary}")
        defaults = cls.Options()
        for field_name, annotation in field_types(cls.Options).items():
            type_name = getattr(annotation, "__name__", str(annotation))
            default = format_value(getattr(defaults, field_name))
            click.echo(f"    {kebab(field_name)}: {type_name} = {default}")
    click.echo("")
    click.echo("named pipelines:")
    for name, named in all_pipelines().items():
        click.echo(f"{name}: {named.summary}")
        click.echo(f"    {named.text}")
        for option in pipeline_options(named):
            flag = f" ({option.flag})" if option.flag else ""
            click.echo(f"    {option.name}: {format_value(option.default())}{flag}  {option.help}")


@cli.command()
@click.argument("model", type=str)
def inspect(model: str) -> None:
    """Show MODEL's inputs, outputs, ops, Q/DQ counts and recipe.

    The recipe is what qdqc recorded when it compiled MODEL: target, calibration, pipeline, qdqc version.
    """
    loaded = load_model(model)
    graph = loaded.graph
    opsets = ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in sorted(loaded.opset_imports.items()))
    click.echo(f"model: {model}")
    click.echo(
        f"opsets: {opsets}   ir_version: {loaded.ir_version}   nodes: {len(graph)}   "
        f"initializers: {len(graph.initializers)}"
    )
    for value in graph.inputs:
        if not value.is_initializer():
            click.echo(f"input  {value.name}: {format_type(value)}")
    for value in graph.outputs:
        click.echo(f"output {value.name}: {format_type(value)}")
    q, dq = count_qdq(graph)
    click.echo(f"QuantizeLinear: {q}   DequantizeLinear: {dq}")
    click.echo("ops:")
    for op, count in sorted(op_counts(graph).items(), key=lambda item: (-item[1], item[0])):
        click.echo(f"  {count:6d} {op}")
    from qdq_compiler.targets.recipe import RECIPE_KEYS, read_recipe

    if any(key in loaded.metadata_props for key in RECIPE_KEYS):
        click.echo("compiled with:")
        for label, text in read_recipe(loaded).lines():
            click.echo(f"  {label}: {text}")
    else:
        click.echo("compiled with: nothing recorded (not an output of qdqc)")
    per_item = {state_key(DECISIONS_STATE), state_key(IMPORTED_AMAX_STATE)}  # one entry per layer or tensor
    for key in sorted(loaded.metadata_props):  # other qdqc records (pass state)
        if key.startswith("qdq_compiler.") and key not in RECIPE_KEYS:
            text, summary = loaded.metadata_props[key], summarize_state(loaded.metadata_props[key])
            if key in per_item and summary is not None:  # a count here, the entries in the IR dump
                text = f"{summary} (shown by `qdqc opt {shlex.quote(model)} --pipeline '' -o -`)"
            click.echo(f"{key}: {text}")


@cli.command()
@click.option("--out-dir", default="qdqc-demo", show_default=True, help="Where to write the INT8 model.")
@click.option(
    "--method",
    default=None,
    cls=PassDefaultOption,
    pass_option=("calibrate", "method"),
    help="Activation calibration: max, percentile{p=99.99}, entropy, mse.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Evaluate on the first N images (default: all)."
)
@click.pass_context
def demo(ctx: click.Context, out_dir: str, method: str | None, limit: int | None) -> None:
    """Compile the bundled detector to INT8 and compare its mAP.

    The main job on the bundled example: compile the sample detector with its calibration images, then
    evaluate the FP32 and the INT8 model on its validation images (`qdqc eval`, whose command is printed).
    """
    from qdq_compiler.demo import format_accuracy, run_demo

    check_output_dir(out_dir, "--out-dir")
    result = run_demo(Path(out_dir), method=method, limit=limit, progress=not ctx.obj["quiet"])
    click.echo(f"compiled the bundled detector to {result.int8_path} (calibration: {result.method})")
    click.echo(result.summary)
    click.echo(result.fusion)
    click.echo(format_accuracy(result, limit))


from qdq_compiler.cli_accuracy import sensitivity  # noqa: E402  (after cli is defined, with the others)
from qdq_compiler.cli_eval import eval_command  # noqa: E402  (after cli is defined, with the others)
from qdq_compiler.cli_trt import build, explain, lint, report_engine  # noqa: E402  (after cli is defined)

for _command in (lint, explain, build, report_engine, sensitivity, eval_command):
    cli.add_command(_command)
for _command in cli.commands.values():  # every command's --help ends with the exit codes
    _command.epilog = exit_codes_epilog()


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback.

    Exit codes (errors.EXIT_CODES): 0 success; 1 the command found problems (ChecksFailed, lint); 2 its
    input is at fault (every other QdqcError, usage errors, an OSError of the machine); 3 a qdqc bug;
    4 TensorRT is not installed; 130 aborted.
    """
    try:
        status = cli.main(args=argv, prog_name="qdqc", standalone_mode=False)
        if isinstance(status, int):  # click returns an Exit's code instead of raising it here
            return status
    except click.exceptions.Exit as done:
        return int(done.exit_code or EXIT_OK)
    except click.Abort:
        click.echo("qdqc: aborted", err=True)
        return EXIT_ABORTED
    except click.ClickException as exc:  # usage errors and bad option values
        click.echo(f"qdqc: error: {exc.format_message()}", err=True)
        return EXIT_BAD_INPUT
    except QdqcError as exc:
        click.echo(f"qdqc: error: {exc}", err=True)
        if logger.isEnabledFor(logging.DEBUG):
            logger.exception("traceback")
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("qdqc: aborted", err=True)
        return EXIT_ABORTED
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            return _internal_error(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"qdqc: error: {exc.strerror}{where}", err=True)  # e.g. the disk filled up mid-run
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug in qdqc: still one line unless -vv
        return _internal_error(exc)
    return EXIT_OK


def _internal_error(exc: Exception) -> int:
    """A bug in qdqc: one line (exit 3) unless -vv, which re-raises for the traceback."""
    if logger.isEnabledFor(logging.DEBUG):
        raise exc
    click.echo(f"qdqc: internal error: {type(exc).__name__}: {exc} (run with -vv for a traceback)", err=True)
    return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Exit with main()'s status (the console script is qdq_compiler.console:run, which also catches Ctrl-C
    while this module is imported)."""
    sys.exit(main())

"""Options and steps `qdqc compile`, `calibrate` and `sensitivity` share: calibration and placement flags,
turning them into pass options, loading calibration data, refusing already-quantized inputs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import click
import onnx

from qdq_compiler.cli_help import PassDefaultOption
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pipelines import OPTIONS_BY_NAME, PIPELINE_OPTIONS
from qdq_compiler.pm import Pass, PassContext, PassManager, parse_pipeline, set_option, settle_pipeline
from qdq_compiler.pm.options import format_value
from qdq_compiler.pm.pipeline_options import flag_text

DEFAULT_COMPILE_PIPELINE = "trt-int8"


def _apply(options: list, fn):
    for option in reversed(options):
        fn = option(fn)
    return fn


def _default(name: str) -> str:
    """`default: trt10`: the pipeline option's default, as the help text shows it."""
    return f"default: {format_value(OPTIONS_BY_NAME[name].default())}"


def calibration_data_options(with_cache: bool = True, with_two_pass: bool = True):
    """Options that choose what calibration reads: data (or a cache), batch size, sample limit, two passes.

    `opt` takes them without --two-pass/--one-pass: it runs its pipeline text as written
    (`calibrate{exact=false}`).
    """

    def decorate(fn):
        options = [
            click.option(
                "--calib",
                "calib",
                default=None,
                metavar="DATA",
                help="Calibration data: a folder of images, a .npy, or an .npz keyed by input name; samples "
                "on the batch axis ([N,3,H,W]) or stacked on a new axis ([N,*input shape]); see "
                "docs/calibration-data.md.",
            ),
            click.option(
                "--calib-cache",
                default=None,
                metavar="FILE",
                help="Reuse statistics saved by `qdqc calibrate` (refused when stale).",
            )
            if with_cache
            else None,
            click.option(
                "--batch-size",
                type=click.IntRange(min=1),
                default=None,
                help="Batch size of the data read (calibration, and sensitivity's evaluation; default: the "
                "model's fixed batch, 1 for a dynamic batch).",
            ),
            click.option(
                "--calib-limit",
                type=click.IntRange(min=1),
                default=None,
                help="Use the first N samples (default: all).",
            ),
            click.option(
                "--two-pass/--one-pass",
                "two_pass",
                default=None,
                help="Read the data twice (the default): histograms over exactly [0, absmax], or once into "
                "growing ones (half the model runs; trt-int8{two-pass=false}, calibrate{exact=false}).",
            )
            if with_two_pass
            else None,
        ]
        return _apply([option for option in options if option is not None], fn)

    return decorate


def calibration_method_options(fn):
    """Options that turn statistics into scales (they do not change the statistics `calibrate` saves)."""
    return _apply(
        [
            click.option(
                "--method",
                default=None,
                cls=PassDefaultOption,
                pass_option=("calibrate", "method"),
                help="Activation calibration: max, percentile{p=99.99}, entropy, mse, or auto (the best per "
                "scale group, validated on the outputs; auto{candidates=[...],tolerance=0.1,samples=64}).",
            ),
            click.option(
                "--calib-override",
                multiple=True,
                metavar="PATTERN=METHOD",
                help="Per-tensor method: 'head.*=max', 'op:Concat=percentile{p=99.9}'.",
            ),
        ],
        fn,
    )


def calibration_options(fn):
    """Every calibration option: data, cache, batch size, limit, two passes, method, overrides."""
    return calibration_data_options()(calibration_method_options(fn))


def placement_options(fn):
    """Options that steer where Q/DQ go (and so which tensors are calibrated)."""
    return _apply(
        [
            click.option(
                "--exclude", multiple=True, metavar="PATTERN", help="Keep nodes whose name matches in float."
            ),
            click.option(
                "--exclude-op", multiple=True, metavar="OP", help="Keep all nodes of this op type in float."
            ),
            click.option(
                "--quantize-head", is_flag=True, help="Quantize the detection-head output layers too."
            ),
        ],
        fn,
    )


def target_option(fn):
    """--target: the TensorRT generation (legalize-trt{target=...})."""
    return click.option(
        "--target",
        type=click.Choice(["trt10", "trt11"]),
        default=None,
        help=f"trt10: float graph with Q/DQ; trt11: strongly typed, float remainder in FP16 (opset 19) "
        f"({_default('target')}).",
    )(fn)


def output_options(fn):
    """Options that shape only the written model: weight form, target, FP16 I/O."""
    return _apply(
        [
            click.option(
                "--weights",
                type=click.Choice(["int8", "qdq"]),
                default=None,
                help="int8: INT8 initializers behind DQ; qdq: float weights behind Q->DQ "
                f"({_default('weights')}).",
            ),
            target_option,
            click.option(
                "--io-fp16", is_flag=True, help="trt11: FP16 graph inputs/outputs (default float32)."
            ),
        ],
        fn,
    )


def refuse_quantized_input(model_path: str) -> None:
    """A model that already holds Q/DQ goes through trt-int8-from-qdq, not the float pipeline."""
    try:
        proto = onnx.load(model_path, load_external_data=False)
    except Exception:  # unreadable: the model loader reports it in one line later
        return
    counts = Counter(node.op_type for node in proto.graph.node)
    q, dq = counts["QuantizeLinear"], counts["DequantizeLinear"]
    if q or dq:
        raise QdqcError(
            f"{model_path} is already quantized ({q} Q / {dq} DQ): "
            "`qdqc compile --pipeline trt-int8-from-qdq` re-places its Q/DQ for TensorRT with its own "
            "scales; or start from the float model"
        )


# flags that feed the calibrate pass's data (not its options): refused when the pipeline does not calibrate
CALIBRATION_DATA_FLAGS = ("calib", "calib_cache", "batch_size", "calib_limit")


def flag_name(param: str) -> str:
    """`--calib-limit` for click's parameter name `calib_limit`."""
    return "--" + param.replace("_", "-")


def refuse_calibration_data_without_calibrate(pass_names: set[str], opts: dict) -> None:
    """A calibration data flag (--calib, --calib-cache, ...) for a pipeline without calibrate is an error."""
    if "calibrate" in pass_names:
        return
    for flag in CALIBRATION_DATA_FLAGS:
        if opts.get(flag):
            raise QdqcError(f"{flag_name(flag)} configures calibrate, which this pipeline does not run")


def apply_compile_flags(passes: list[Pass] | PassManager, opts: dict) -> None:
    """Set the pipeline options the command's flags give (PIPELINE_OPTIONS), where the text left them unset.

    A flag not given (None, empty, False of a flag without an off form) sets nothing; one that contradicts
    the text is a PipelineError naming both; one whose pass the pipeline does not run is refused.
    """
    passes = passes.passes if isinstance(passes, PassManager) else passes
    names = {p.name for p in passes}
    refuse_calibration_data_without_calibrate(names, opts)
    for option in PIPELINE_OPTIONS:
        value = opts.get(option.flag_param) if option.flag_param else None
        if value is None or (value is False and option.off_flag is None) or value == ():
            continue
        value = tuple(value) if isinstance(value, list | tuple) else value
        routed = option.routed_passes()
        if not names.intersection(routed):
            passes_named = " or ".join(routed)
            raise QdqcError(f"{option.flag} configures {passes_named}, which this pipeline does not run")
        set_option(passes, option, value, flag_text(option, value))
    settle_pipeline(passes)


def prepare_pipeline(
    model_path: str, pipeline: str, opts: dict, quiet: bool, stop_after: str | None = None
) -> tuple[PassManager, PassContext]:
    """The pipeline with the command's flags applied, and a context holding its calibration data.

    `stop_after` cuts the pipeline after the first pass of that name (`calibrate` runs trt-int8 up to it).
    A model that already holds Q/DQ is refused unless the pipeline strips them before placing its own.
    """
    passes = parse_pipeline(pipeline)
    apply_compile_flags(passes, opts)
    if stop_after is not None:
        names = [p.name for p in passes]
        passes = passes[: names.index(stop_after) + 1]
    manager = PassManager(passes)
    run_names = {p.name for p in manager.passes}
    if "place-qdq" in run_names and "strip-qdq" not in run_names:
        refuse_quantized_input(model_path)
    pass_ctx = PassContext(progress=not quiet)
    if "calibrate" in run_names:
        prepare_calibration(model_path, opts, pass_ctx)
    return manager, pass_ctx


def open_evaluation_data(model_path: str, source: str, batch_size: int | None) -> Any:
    """The data `--eval` names, opened for the float model (a bad path is a one-line error)."""
    from qdq_compiler.calib import open_calibration_data
    from qdq_compiler.calib.errors import CalibrationError

    try:
        return open_calibration_data(source, to_proto(load_model(model_path)), batch_size=batch_size)
    except CalibrationError as exc:
        raise QdqcError(f"evaluation data (--eval): {exc}") from None


def prepare_calibration(model_path: str, opts: dict, pass_ctx: PassContext) -> None:
    """Put the calibration data (and cached statistics) into the pass context, or refuse clearly."""
    from qdq_compiler.calib import cache_key, load_cache, model_sha256, open_calibration_data, read_cache_key

    float_proto = to_proto(load_model(model_path))
    if not opts["calib"] and not opts["calib_cache"]:
        raise QdqcError(
            "calibration data is required: --calib DATA (images folder, .npy or .npz) or --calib-cache FILE; "
            "random data is never used silently"
        )
    if opts["calib"]:
        pass_ctx.calibration_data = open_calibration_data(
            opts["calib"], float_proto, batch_size=opts["batch_size"], limit=opts["calib_limit"]
        )
    if opts["calib_cache"]:
        stored = read_cache_key(opts["calib_cache"])
        if stored.model_sha256 != model_sha256(float_proto):
            raise QdqcError(
                f"stale calibration cache {opts['calib_cache']}: model hash differs: it was computed from "
                f"another model than {model_path} (a cache serves only the float model `qdqc calibrate` "
                "read, not a model derived from it); recalibrate with --calib DATA"
            )
        if pass_ctx.calibration_data is not None:
            expected = cache_key(float_proto, pass_ctx.calibration_data, stored.num_bins)
        else:  # no data given: that the cache belongs to this model (checked above) is all there is
            expected = stored
        pass_ctx.calibration_stats.update(load_cache(opts["calib_cache"], expected))


def report_option(fn):
    """--report DIR: also write an HTML report with plots (compile, sensitivity, eval; docs/report.md)."""
    return click.option(
        "--report",
        "report_dir",
        default=None,
        metavar="DIR",
        help="Also write an HTML report with plots to DIR/index.html (default: not written; needs the extra "
        "'report': matplotlib; docs/report.md).",
    )(fn)

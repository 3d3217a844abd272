"""Options and steps `qdqc compile`, `calibrate` and `sensitivity` share: calibration and placement flags,
turning them into pass options, loading calibration data, refusing already-quantized inputs."""

from __future__ import annotations

import dataclasses
from collections import Counter

import click
import onnx

from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager

DEFAULT_COMPILE_PIPELINE = "trt-int8"


def calibration_options(fn):
    """Options that feed calibration: data, cache, batch size, sample limit, method."""
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
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=None,
            help="Batch size of the data read (calibration, and sensitivity's evaluation).",
        ),
        click.option(
            "--calib-limit", type=click.IntRange(min=1), default=None, help="Use the first N samples."
        ),
        click.option(
            "--method", default=None, help="Activation calibration: max, percentile{p=99.99}, entropy, mse."
        ),
        click.option(
            "--two-pass",
            is_flag=True,
            default=False,
            help="Read the data twice: histograms over exactly [0, absmax] instead of growing ones "
            "(twice the model runs; calibrate{exact=true}).",
        ),
        click.option(
            "--calib-override",
            multiple=True,
            metavar="PATTERN=METHOD",
            help="Per-tensor method: 'head.*=max', 'op:Concat=percentile{p=99.9}'.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def placement_options(fn):
    """Options that steer Q/DQ placement and the output form."""
    options = [
        click.option(
            "--exclude", multiple=True, metavar="PATTERN", help="Keep nodes whose name matches in float."
        ),
        click.option(
            "--exclude-op", multiple=True, metavar="OP", help="Keep all nodes of this op type in float."
        ),
        click.option("--quantize-head", is_flag=True, help="Quantize the detection-head output layers too."),
        click.option(
            "--weights",
            type=click.Choice(["int8", "qdq"]),
            default="int8",
            show_default=True,
            help="int8: INT8 initializers behind DQ; qdq: float weights behind Q->DQ.",
        ),
        click.option(
            "--target",
            type=click.Choice(["trt10", "trt11"]),
            default="trt10",
            show_default=True,
            help="trt10: float graph with Q/DQ; trt11: strongly typed, float remainder in FP16 (opset 19).",
        ),
        click.option("--io-fp16", is_flag=True, help="trt11: FP16 graph inputs/outputs (default float32)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


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


# flag (click's parameter name) -> the pass it configures; a flag whose pass is not in the pipeline is refused
FLAG_PASSES = {
    "exclude": "place-qdq", "exclude_op": "place-qdq", "quantize_head": "place-qdq",
    "calib": "calibrate", "calib_cache": "calibrate", "batch_size": "calibrate", "calib_limit": "calibrate",
    "method": "calibrate", "calib_override": "calibrate", "two_pass": "calibrate",
    "missing_scales": "import-scales", "io_fp16": "legalize-trt",
}


def _refuse_flags_without_their_pass(manager: PassManager, opts: dict) -> None:
    names = {p.name for p in manager.passes}
    for flag, pass_name in FLAG_PASSES.items():
        if opts.get(flag) and pass_name not in names:
            option = "--" + flag.replace("_", "-")
            raise QdqcError(f"{option} configures {pass_name}, which this pipeline does not run")


def apply_compile_flags(manager: PassManager, opts: dict) -> None:
    """Turn compile's flags into options of the passes they belong to (the printed pipeline shows them)."""
    _refuse_flags_without_their_pass(manager, opts)
    placement: dict = {}
    if opts.get("exclude"):
        placement["exclude"] = tuple(opts["exclude"])
    if opts.get("exclude_op"):
        placement["exclude_ops"] = tuple(opts["exclude_op"])
    if opts.get("quantize_head"):
        placement["quantize_head"] = True
    calibration: dict = {}
    if opts.get("method"):
        from qdq_compiler.calib import parse_method_spec

        parse_method_spec(opts["method"])  # reject a bad method before any work
        calibration["method"] = opts["method"]
    if opts.get("calib_override"):
        calibration["overrides"] = tuple(opts["calib_override"])
    if opts.get("two_pass"):
        calibration["exact"] = True
    target = opts.get("target") or "trt10"
    for pass_ in manager.passes:
        if pass_.name == "legalize-trt":
            io_fp16 = bool(opts.get("io_fp16"))
            pass_.options = dataclasses.replace(pass_.options, target=target, io_fp16=io_fp16)
        if pass_.name == "upgrade-opset" and target == "trt11":
            pass_.options = dataclasses.replace(pass_.options, min=max(pass_.options.min, 19))
        if pass_.name == "place-qdq" and placement:
            pass_.options = dataclasses.replace(pass_.options, **placement)
        if pass_.name == "calibrate" and calibration:
            pass_.options = dataclasses.replace(pass_.options, **calibration)
        if pass_.name == "import-scales" and opts.get("missing_scales"):
            pass_.options = dataclasses.replace(pass_.options, missing=opts["missing_scales"])
    if opts.get("weights") == "qdq":
        manager.passes = [p for p in manager.passes if p.name != "fold-scales"]


def prepare_pipeline(
    model_path: str, pipeline: str, opts: dict, quiet: bool
) -> tuple[PassManager, PassContext]:
    """The pipeline with the command's flags applied, and a context holding its calibration data.

    A model that already holds Q/DQ is refused unless the pipeline strips them before placing its own.
    """
    manager = PassManager(pipeline)
    apply_compile_flags(manager, opts)
    names = {p.name for p in manager.passes}
    if "place-qdq" in names and "strip-qdq" not in names:
        refuse_quantized_input(model_path)
    pass_ctx = PassContext(progress=not quiet)
    if "calibrate" in names:
        prepare_calibration(model_path, opts, pass_ctx)
    return manager, pass_ctx


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

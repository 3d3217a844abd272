"""`qdqc eval`: an INT8 model against its FP32 model on data: per-output SQNR and cosine, task metric."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qdq_compiler.cli_options import report_option
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.paths import check_output_file, model_files, refuse_overwriting_inputs
from qdq_compiler.report.commands import check_report_dir, eval_report
from qdq_compiler.summary import write_json_atomic


@click.command("eval")
@click.argument("fp32", type=str)
@click.argument("int8", type=str)
@click.option(
    "--data",
    required=True,
    metavar="DATA",
    help="Samples to run both models on, as --calib takes them: a folder of images, a .npy, or an .npz keyed "
    "by input name (docs/calibration-data.md).",
)
@click.option(
    "--labels",
    default=None,
    metavar="FILE|DIR",
    help="Ground truth (default: none, INT8 is measured against FP32 only): detector a COCO json; classifier "
    "a .json or .csv of file name -> class index; segmentation a folder of masks <name>.png/.npy.",
)
@click.option(
    "--kind",
    type=click.Choice(["auto", "detector", "segmentation", "classifier"]),
    default="auto",
    show_default=True,
    help="The task; auto reads the model's qdq_compiler.model_kind metadata, else its output shapes.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="segmentation: a map pixel is foreground when above this value.",
)
@click.option(
    "--reference-conf",
    type=click.FloatRange(0.0, 1.0),
    default=0.25,
    show_default=True,
    help="detector: FP32 detections scored above this are the ground truth of INT8 vs FP32 mAP.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Batch size of the data read (default: the model's fixed batch, 1 for a dynamic batch).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Use the first N samples (default: all)."
)
@click.option(
    "--json",
    "json_path",
    default=None,
    metavar="FILE",
    help="Also write the report as JSON to FILE ('-': print JSON, not the table; default: not written).",
)
@report_option
@click.pass_context
def eval_command(
    ctx: click.Context,
    fp32: str,
    int8: str,
    data: str,
    labels: str | None,
    kind: str,
    threshold: float,
    reference_conf: float,
    batch_size: int | None,
    limit: int | None,
    json_path: str | None,
    report_dir: str | None,
) -> None:
    """Measure an INT8 model against its FP32 model on data.

    Runs FP32 and INT8 in onnxruntime on --data and prints each output's SQNR and cosine similarity, then
    the task metric: top-1 agreement (classifier), IoU of the binarised map (segmentation) or mAP
    (YOLO-style detector), against the FP32 model's result and, with --labels, against the labels.
    """
    from qdq_compiler.evaluation import evaluate_models, format_report, report_to_json

    check_report_dir(report_dir)
    if json_path is not None and json_path != "-":
        check_output_file(json_path, "--json")
        inputs: list[tuple[str, str | Path]] = [
            *model_files(fp32),
            *model_files(int8),
            ("evaluation data", data),
        ]
        if labels:
            inputs.append(("labels", labels))
        refuse_overwriting_inputs({"--json": json_path}, inputs)
    int8_model = load_model(int8)
    float_proto, int8_proto = to_proto(load_model(fp32)), to_proto(int8_model)
    report = evaluate_models(
        float_proto,
        int8_proto,
        data,
        labels=labels,
        kind=kind,
        batch_size=batch_size,
        limit=limit,
        threshold=threshold,
        reference_conf=reference_conf,
        progress=not ctx.obj["quiet"],
    )
    if json_path == "-":
        click.echo(json.dumps(report_to_json(report), indent=2, sort_keys=True, allow_nan=False))
    else:
        click.echo(format_report(report))
    if json_path is not None and json_path != "-":
        write_json_atomic(json_path, report_to_json(report))
    if report_dir is not None:
        eval_report(report_dir, fp32, int8, int8_model, report, ctx.obj["quiet"], err=json_path == "-")

"""The main job on the bundled example: compile the sample detector to INT8 and compare its mAP with FP32
(the report `qdqc eval` prints)."""

from __future__ import annotations

import importlib.util
import logging
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

import onnx

from qdq_compiler.accuracy.selfcheck import DEFAULT_SAMPLES, first_samples, run_selfcheck
from qdq_compiler.calib import open_calibration_data
from qdq_compiler.detect import bundled
from qdq_compiler.errors import QdqcError
from qdq_compiler.evaluation import EvalReport, evaluate_models, format_report
from qdq_compiler.ir import load_model, save_model, to_proto
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.summary import compile_summary
from qdq_compiler.targets import predict_fusions


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured: `qdqc eval`'s report (mAP of both models), the compile summary and the fusion
    prediction."""

    evaluation: EvalReport
    summary: str
    fusion: str
    int8_path: Path
    method: str  # the activation calibration method used


def run_demo(
    out_dir: Path, method: str | None = None, limit: int | None = None, progress: bool = False
) -> DemoResult:
    """Compile the bundled detector with its calibration images, evaluate FP32 and INT8 on its val set.

    `method` None keeps the calibrate pass's default method.
    """
    for module, package in (("PIL", "pillow"), ("faster_coco_eval", "faster-coco-eval")):
        if importlib.util.find_spec(module) is None:
            raise QdqcError(f"the demo needs {package}: pip install -e '.[eval]'")
    if not bundled.available():
        raise QdqcError(f"the bundled sample detector is missing under {bundled.DETECTOR_DIR}")
    out_dir.mkdir(parents=True, exist_ok=True)
    float_proto = onnx.load(str(bundled.model_path()))
    model = load_model(float_proto)
    manager = PassManager("trt-int8")
    calibrate = next(pass_ for pass_ in manager.passes if pass_.name == "calibrate")
    if method is not None:
        calibrate.options = replace(calibrate.options, method=method)
    data = open_calibration_data(str(bundled.calib_dir()), float_proto)
    manager.run(model, PassContext(calibration_data=data, progress=progress))
    int8_path = save_model(model, out_dir / "detector.int8.onnx")
    check = run_selfcheck(float_proto, to_proto(model), first_samples(data, DEFAULT_SAMPLES))
    for line in check.warnings:
        logging.getLogger("qdqc").warning(line)
    report = predict_fusions(model)
    fusion = (
        f"predicted by `qdqc explain`: INT8 MAC share {100 * report.int8_mac_share:.1f}%, "
        f"{len(report.requantizations)} requantizations, {len(report.reformats)} standalone Q/DQ"
    )
    evaluation = evaluate_models(
        float_proto,
        to_proto(model),
        str(bundled.val_dir()),
        labels=str(bundled.val_json()),
        kind="detector",
        limit=limit,
        progress=progress,
    )
    return DemoResult(
        evaluation=evaluation,
        summary=compile_summary(model, check),
        fusion=fusion,
        int8_path=int8_path,
        method=calibrate.options.method,
    )


def eval_command(result: DemoResult, limit: int | None = None) -> str:
    """The `qdqc eval` command line that measures the same (for the user to run again)."""
    words = ["qdqc", "eval", str(bundled.model_path()), str(result.int8_path)]
    words += ["--data", str(bundled.val_dir()), "--labels", str(bundled.val_json())]
    words += ["--limit", str(limit)] if limit else []
    return shlex.join(words)


def format_accuracy(result: DemoResult, limit: int | None = None) -> str:
    """`qdqc eval`'s report of FP32 and INT8 on the validation images, under the command that prints it."""
    heading = f"accuracy on the validation images: {eval_command(result, limit)}"
    return f"{heading}\n{format_report(result.evaluation)}"

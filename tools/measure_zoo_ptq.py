"""Measure INT8 PTQ of the bundled classifier and text segmenter: qdqc, onnxruntime and (if given) ModelOpt.

For each model: FP32 task metric on the bundled val data; then each tool's INT8 model, calibrated on the
bundled 64 calib images, against FP32 on the val images: SQNR of the output (dB, all val outputs at once)
and the task metric vs FP32 (classifier: top-1 agreement; segmenter: IoU of the maps binarised at 0.5),
plus the task metric vs the labels.

    python tools/measure_zoo_ptq.py [--modelopt-python /work/venvs/modelopt/bin/python] [--out FILE.md]

Tools: ``qdqc compile MODEL --calib CALIB -o OUT`` (default pipeline and calibration); onnxruntime
``quantize_static`` (QDQ, per-channel, MinMax, symmetric int8 as bench/bench_ptq.py runs it, after
``quant_pre_process``); ModelOpt ``python -m modelopt.onnx.quantization --quantize_mode int8`` with its
default calibration and with ``--calibration_method max`` (``--high_precision_dtype fp32``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from qdq_compiler.accuracy.numerics import sqnr_db
from qdq_compiler.zoo import bundled


def quantize_ort(src: Path, out: Path, calib: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    name = onnx.load(str(pre)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{name: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self._it, None)

    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )


def quantize_qdqc(src: Path, out: Path, calib_dir: Path) -> str:
    """Run the CLI; return its last output lines (the self-check summary)."""
    cmd = [
        sys.executable,
        "-m",
        "qdq_compiler",
        "compile",
        str(src),
        "--calib",
        str(calib_dir),
        "-o",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"qdqc compile failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    text = (done.stdout + done.stderr).strip().splitlines()
    return " / ".join(line.strip() for line in text if "SQNR" in line or "sqnr" in line)[:300]


def quantize_modelopt(python: str, src: Path, out: Path, calib: np.ndarray, method: str | None) -> None:
    npy = out.with_suffix(".calib.npy")
    np.save(npy, calib)
    source = out.with_suffix(".input.onnx")  # Model Optimizer edits its input in place: give it a copy
    shutil.copyfile(src, source)
    cmd = [python, "-m", "modelopt.onnx.quantization", "--onnx_path", str(source), "--quantize_mode", "int8"]
    cmd += ["--calibration_data_path", str(npy), "--calibration_eps", "cpu", "--high_precision_dtype", "fp32"]
    cmd += ["--output_path", str(out)]
    if method:
        cmd += ["--calibration_method", method]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"modelopt failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def task_metrics(model: bundled.BundledModel, ref: np.ndarray, test: np.ndarray, paths: list[Path]) -> str:
    if model.kind == "classifier":
        agree = bundled.top1_accuracy(test, np.argmax(ref, axis=1))
        acc = bundled.top1_accuracy(test, bundled.class_labels(paths))
        return f"top-1 agreement {agree:.4f}, top-1 {acc:.4f}"
    iou_ref = bundled.binary_iou(test[:, 0] > 0.5, ref[:, 0] > 0.5)
    iou_gt = bundled.binary_iou(test[:, 0] > 0.5, bundled.text_masks(paths))
    return f"IoU vs FP32 {iou_ref:.4f}, IoU vs labels {iou_gt:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="classifier,segmenter")
    ap.add_argument("--modelopt-python", default=None, help="a Python with nvidia-modelopt installed")
    ap.add_argument("--tools", default="qdqc,ort,modelopt,modelopt-max")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    rows = ["| model | tool | SQNR dB | task metric | seconds |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="zoo_ptq.") as tmp:
        for name in args.models.split(","):
            model = bundled.BUNDLED[name]
            paths = model.val_images()
            images = bundled.load_images(paths)
            calib = bundled.load_images(sorted(model.calib_dir().glob("*.jpg")))
            ref = bundled.run_model(model.model_path(), images)
            rows.append(f"| {name} | FP32 | - | {task_metrics(model, ref, ref, paths)} | - |")
            for tool in args.tools.split(","):
                if tool.startswith("modelopt") and not args.modelopt_python:
                    rows.append(f"| {name} | {tool} | not measured: no --modelopt-python | - | - |")
                    continue
                out = Path(tmp) / f"{name}.{tool}.onnx"
                start = time.perf_counter()
                note = ""
                try:
                    if tool == "qdqc":
                        note = quantize_qdqc(model.model_path(), out, model.calib_dir())
                    elif tool == "ort":
                        quantize_ort(model.model_path(), out, calib)
                    else:
                        method = "max" if tool == "modelopt-max" else None
                        quantize_modelopt(args.modelopt_python, model.model_path(), out, calib, method)
                except Exception as error:  # the row says what failed
                    rows.append(f"| {name} | {tool} | failed: {str(error)[:200]} | - | - |")
                    continue
                seconds = time.perf_counter() - start
                test = bundled.run_model(out, images)
                sqnr = sqnr_db(ref, test)
                metric = task_metrics(model, ref, test, paths)
                rows.append(f"| {name} | {tool} | {sqnr:.2f} | {metric} | {seconds:.0f} |")
                if note:
                    print(f"{name} qdqc self-check: {note}", flush=True)
                print(rows[-1], flush=True)
    table = "\n".join(rows) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Models quantized by other tools, before and after `qdqc compile --pipeline trt-int8-from-qdq`.

The bundled sample detector is quantized three ways, all calibrated on its 64 bundled calibration images:
onnxruntime's ``quantize_static`` with the TensorRT recipe (QDQ, symmetric INT8, per channel), onnxruntime
with its defaults (asymmetric UINT8 activations, per-tensor weights), and NVIDIA Model Optimizer's ONNX PTQ
(int8, its default entropy calibration; only when ``--modelopt-python`` / ``$MODELOPT_PYTHON`` names an
interpreter that has it). Each result is re-placed by qdqc with its own scales (``--missing-scales float``:
tensors the source left float stay float), and both are measured:

- TensorRT lint errors (``qdqc lint``), predicted requantizations, standalone Q/DQ (reformat layers) and
  INT8 MAC share (``qdqc explain``'s offline fusion prediction; no TensorRT here);
- SQNR of the outputs against the FP32 model on 16 validation images (onnxruntime, no graph optimization);
- COCO mAP@0.5 and mAP@0.5:0.95 on the 128 bundled validation images (onnxruntime CPU).

qdqc's own compile of the float model (default mse calibration) is the last row, for reference.

Run: ``python bench/bench_import_qdq.py [--modelopt-python PATH]`` -> ``bench/results/import_qdq.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from qdq_compiler.accuracy import compare_outputs, run_outputs
from qdq_compiler.calib import open_calibration_data
from qdq_compiler.detect import bundled
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pipelines import TRT_INT8_FROM_QDQ
from qdq_compiler.pm import PassContext, PassManager
from qdq_compiler.targets import lint_model, predict_fusions

RESULTS = Path(__file__).resolve().parent / "results"


def calibration_array(float_model: onnx.ModelProto) -> np.ndarray:
    """The 64 bundled calibration images, preprocessed as qdqc does, stacked on axis 0."""
    data = open_calibration_data(str(bundled.calib_dir()), float_model)
    return np.concatenate([next(iter(batch.values())) for batch in data])


def quantize_ort(source: Path, target: Path, calib: np.ndarray, recipe: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx.load(source, load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(calib[:, None])

        def get_next(self):
            sample = next(self.samples, None)
            return None if sample is None else {name: sample}

    if recipe == "trt":
        options = dict(
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    else:  # onnxruntime's defaults
        options = {}
    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, **options)


def quantize_modelopt(python: str, source: Path, target: Path, calib_path: Path) -> str | None:
    """Model Optimizer's ONNX PTQ in its own interpreter; None when it ran, else why not."""
    command = [
        python,
        "-m",
        "modelopt.onnx.quantization",
        "--onnx_path",
        str(source),
        "--quantize_mode",
        "int8",
        "--calibration_data_path",
        str(calib_path),
        "--calibration_eps",
        "cpu",
        "--high_precision_dtype",
        "fp32",
        "--output_path",
        str(target),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode or not target.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()
        return tail[-1] if tail else f"exit {done.returncode}"
    return None


def measure(model: onnx.ModelProto, reference: dict, feed: list, with_map: bool) -> dict:
    ir_model = load_model(model)
    report = predict_fusions(ir_model)
    row = {
        "lint errors": sum(1 for v in lint_model(ir_model) if v.severity == "error"),
        "requantizations": len(report.requantizations),
        "standalone Q/DQ": len(report.reformats),
        "INT8 MAC share": f"{100 * report.int8_mac_share:.1f}%",
        "SQNR dB": f"{compare_outputs(reference, run_outputs(model, feed)).sqnr_db:.2f}",
    }
    if with_map:
        scores = bundled.evaluate_bundled(model)
        row["mAP@0.5"], row["mAP@0.5:0.95"] = f"{scores['map50']:.4f}", f"{scores['map50_95']:.4f}"
    return row


def replace_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, float]:
    start = time.perf_counter()
    ir_model = load_model(model)
    # tensors the source tool left float (Model Optimizer skips some small Convs) stay float
    PassManager(TRT_INT8_FROM_QDQ.replace("import-scales", "import-scales{missing=float}")).run(
        ir_model, PassContext()
    )
    return to_proto(ir_model), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modelopt-python", default=os.environ.get("MODELOPT_PYTHON", ""))
    parser.add_argument("--no-map", action="store_true", help="skip the mAP evaluation (faster)")
    args = parser.parse_args()
    float_model = onnx.load(bundled.model_path())
    calib = calibration_array(float_model)
    val = open_calibration_data(str(bundled.val_dir()), float_model, limit=16)
    feed = list(val)
    reference = run_outputs(float_model, feed)
    rows: list[tuple[str, dict]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_import_qdq.") as tmp:
        work = Path(tmp)
        float_path = work / "detector.onnx"  # the tools get a copy: one of them writes back to its input
        shutil.copyfile(bundled.model_path(), float_path)
        sources: list[tuple[str, Path]] = []
        for recipe, label in (("trt", "onnxruntime, TensorRT recipe"), ("default", "onnxruntime defaults")):
            target = work / f"ort_{recipe}.onnx"
            quantize_ort(float_path, target, calib, recipe)
            sources.append((label, target))
        if args.modelopt_python:
            np.save(work / "calib.npy", calib)
            target = work / "modelopt.onnx"
            failure = quantize_modelopt(args.modelopt_python, float_path, target, work / "calib.npy")
            if failure is None:
                sources.append(("Model Optimizer int8", target))
            else:
                notes.append(f"Model Optimizer did not run: {failure}")
        else:
            notes.append("Model Optimizer: not measured (no --modelopt-python / $MODELOPT_PYTHON)")
        for label, path in sources:
            model = onnx.load(path)
            rows.append((label, measure(model, reference, feed, not args.no_map)))
            replaced, seconds = replace_qdq(model)
            rows.append(
                (
                    f"  -> qdqc trt-int8-from-qdq ({seconds:.2f} s)",
                    measure(replaced, reference, feed, not args.no_map),
                )
            )
    own = load_model(float_model)
    PassManager("trt-int8").run(own, PassContext(calibration_data=str(bundled.calib_dir())))
    rows.append(
        ("qdqc trt-int8 from the float model (mse)", measure(to_proto(own), reference, feed, not args.no_map))
    )
    if not args.no_map:
        scores = bundled.evaluate_bundled(float_model)
        notes.append(f"FP32: mAP@0.5 {scores['map50']:.4f}, mAP@0.5:0.95 {scores['map50_95']:.4f}")
    columns = list(rows[0][1])
    lines = [
        "## Already-quantized models, before and after trt-int8-from-qdq (bundled detector)",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for label, row in rows:
        lines.append(f"| {label} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    lines += [""] + [f"- {note}" for note in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "import_qdq.md").write_text(text)
    print(f"wrote {RESULTS / 'import_qdq.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()

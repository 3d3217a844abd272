"""Benchmark: INT8 accuracy of every bundled model by qdqc, onnxruntime and Model Optimizer in one run.

For each bundled model (qdq_compiler/data/{detector,classifier,segmenter}, and ``segmenter_wide``: the
segmenter that reproduces issue 15's failure, on the segmenter's data) and each variant:

- qdqc's default pipeline (``default``);
- each calibration method, one pass and two passes (``max``, ``percentile``, ``entropy``, ``mse``:
  ``--method M --one-pass``; ``max-2p`` ... ``mse-2p``: ``--method M --two-pass``, the default path);
- each policy of bench_policies.py (``trt-kernels``, ``pooled-float``, ``equalize``, ``correct-bias``,
  ``equalize-channels``, ``all``, ``no-equalize``; those equal to the default are skipped), and the
  scale-group policies ``group-float`` (``unify-scales{disagree=float}``: a group whose ranges differ more
  than max-ratio stays float) and ``group-ratio4`` (``unify-scales{max-ratio=4}``: members more than 4x
  below their group keep their own scale), and ``no-int8-mul`` (``place-qdq{int8-mul=false}``: the SE Mul
  in float), as pipeline texts derived from the registered trt-int8 (bench_policies.pipeline);
- onnxruntime ``quantize_static`` (``ort``: QDQ, per-channel, MinMax, symmetric int8) and Model Optimizer
  0.47 (``modelopt``: ``--quantize_mode int8`` default calibration; ``modelopt-max``), all calibrated on
  the same images as qdqc reads them (``open_calibration_data``: RGB / 255, NCHW);

it measures ``qdqc eval`` against FP32 on the validation images (output SQNR and the task metric: mAP@0.5
vs FP32 detections, top-1 agreement, IoU of the binarised map), ``qdqc explain``'s prediction (INT8 MAC
share, requantizations, standalone Q/DQ), and the quantizing process's wall time and peak RSS.

    python bench/bench_accuracy.py [--models detector,segmenter] [--variants default,ort,modelopt]
        [--modelopt-python /work/venvs/modelopt/bin/python] [--calib-limit 64] [--eval-limit 128]
        -> bench/results/accuracy.md, accuracy.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from bench_policies import VARIANTS as POLICY_VARIANTS  # noqa: E402
from bench_policies import bundled_models, pipeline  # noqa: E402

from qdq_compiler.calib import open_calibration_data  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELOPT_PYTHON = "/work/venvs/modelopt/bin/python"
METHODS = ("max", "percentile", "entropy", "mse")


def qdqc_variants() -> dict[str, list[str]]:
    """variant name -> the `qdqc compile` arguments that select it."""
    variants: dict[str, list[str]] = {"default": []}
    for method in METHODS:
        variants[method] = ["--method", method, "--one-pass"]
        variants[f"{method}-2p"] = ["--method", method, "--two-pass"]
    for name, text in POLICY_VARIANTS.items():
        if text != pipeline():  # "equalize" is the default itself once trt-int8 runs it
            variants[name] = ["--pipeline", text]
    for name, options in (("group-float", "disagree=float"), ("group-ratio4", "max-ratio=4")):
        variants[name] = ["--pipeline", pipeline().replace("unify-scales", f"unify-scales{{{options}}}")]
    variants["no-int8-mul"] = ["--pipeline", pipeline(place="place-qdq{int8-mul=false}")]
    return variants


QDQC_VARIANTS = qdqc_variants()
EXTERNAL = ("ort", "modelopt", "modelopt-max")
ALL_VARIANTS = (*QDQC_VARIANTS, *EXTERNAL)


def run_measured(cmd: list[str]) -> tuple[int, str, float, float]:
    """Run ``cmd``; return its exit code, stderr tail, wall seconds and peak RSS in MB (its own, by wait4)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
    return process.returncode, tail[0][:300], seconds, usage.ru_maxrss / 1024


def with_labels(paths: dict[str, Path], work: Path) -> dict[str, Path]:
    """The model's paths plus its validation labels when shipped (val.json, or val_masks/). The classifier's
    val.json (``{"classes": [...], "labels": {file: index}}``) is passed on as its ``labels`` mapping, the
    form `qdqc eval --labels` reads."""
    folder = paths["model"].parent
    for candidate in (folder / "val.json", folder / "val_masks"):
        if candidate.exists():
            if candidate.suffix == ".json":
                shipped = json.loads(candidate.read_text())
                if isinstance(shipped, dict) and isinstance(shipped.get("labels"), dict):
                    candidate = work / f"{folder.name}.labels.json"
                    candidate.write_text(json.dumps(shipped["labels"]))
            return paths | {"labels": candidate}
    return paths


def calibration_array(model: Path, calib: Path, limit: int, out: Path) -> Path:
    """The calibration images as one [N, ...] .npy, read as qdqc reads them (for onnxruntime / ModelOpt)."""
    batches = open_calibration_data(str(calib), onnx.load(model, load_external_data=False), limit=limit)
    arrays = [next(iter(batch.values())) for batch in batches]
    np.save(out, np.concatenate(arrays, axis=0).astype(np.float32))
    return out


def quantize_command(variant: str, paths: dict[str, Path], out: Path, npy: Path, args) -> list[str]:
    if variant in QDQC_VARIANTS:
        common = ["-q", "compile", str(paths["model"]), "--calib", str(paths["calib"]), "--no-check"]
        common += ["--calib-limit", str(args.calib_limit), "-o", str(out)]
        return [sys.executable, "-m", "qdq_compiler", *common, *QDQC_VARIANTS[variant]]
    if variant == "ort":
        return [sys.executable, __file__, "--ort-child", str(paths["model"]), str(out), str(npy)]
    # Model Optimizer adds shape value_info to the file it is given, in place: hand it a copy, never the
    # bundled model
    source = out.with_name(out.stem + ".input.onnx")
    shutil.copyfile(paths["model"], source)
    cmd = [args.modelopt_python, "-m", "modelopt.onnx.quantization", "--onnx_path", str(source)]
    cmd += ["--quantize_mode", "int8", "--calibration_data_path", str(npy), "--calibration_eps", "cpu"]
    cmd += ["--high_precision_dtype", "fp32", "--output_path", str(out)]
    return cmd + (["--calibration_method", "max"] if variant == "modelopt-max" else [])


def _qdqc_json(*args: str) -> tuple[dict | None, str]:
    """A qdqc command's JSON report (None when it printed none) and its last stderr line."""
    done = subprocess.run([sys.executable, "-m", "qdq_compiler", *args], capture_output=True, text=True)
    tail = (done.stderr.strip().splitlines() or [""])[-1][:300]
    try:
        return json.loads(done.stdout), tail
    except json.JSONDecodeError:
        return None, tail


def measure(name: str, paths: dict[str, Path], variant: str, work: Path, npy: Path, args) -> dict:
    """Quantize one variant and measure it; a failure is recorded with its last stderr line."""
    out = work / f"{name}.{variant}.onnx"
    code, tail, seconds, rss = run_measured(quantize_command(variant, paths, out, npy, args))
    row: dict = {
        "model": name,
        "variant": variant,
        "quantize_s": round(seconds, 1),
        "peak_rss_mb": round(rss),
    }
    if code != 0 or not out.exists():
        return row | {"error": f"exit {code}: {tail}"}
    labels = ["--labels", str(paths["labels"])] if paths.get("labels") else []
    report, tail = _qdqc_json(
        "-q", "eval", str(paths["model"]), str(out), "--data", str(paths["val"]), "--limit",
        str(args.eval_limit), *labels, "--json", "-",
    )  # fmt: skip
    if report is None:
        return row | {"error": f"qdqc eval: {tail}"}
    metric_name, metric = next(iter(report["metrics"].items()))
    row |= {
        "metric": metric_name,
        "int8_vs_fp32": metric["int8_vs_fp32"],
        "fp32_vs_labels": metric.get("fp32_vs_labels"),
        "int8_vs_labels": metric.get("int8_vs_labels"),
        "sqnr_db": report["outputs"][report["task_output"]]["sqnr_db"],
    }
    explained, _ = _qdqc_json("explain", str(out), "--json")
    if explained is not None and "int8_mac_share" in explained:
        row |= {
            "int8_mac_share": explained["int8_mac_share"],
            "float_layers": sum(1 for layer in explained["layers"] if layer["precision"] != "int8"),
            "requantizations": len(explained["requantizations"]),
            "standalone_qdq": len(explained["reformats"]),
        }
    return row


COLUMNS = ["model", "variant", "metric", "int8_vs_fp32", "int8_vs_labels", "fp32_vs_labels", "sqnr_db",
           "int8_mac_share", "float_layers",
           "requantizations", "standalone_qdq", "quantize_s", "peak_rss_mb"]  # fmt: skip


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1 else f"{value:.2f}"
    return str(value)


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['variant']} | error: {row['error']} |")
            continue
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in COLUMNS) + " |")
    return "\n".join(lines)


def ort_child(src: str, out: str, npy: str) -> None:
    """onnxruntime quantize_static as tools/measure_zoo_ptq.py runs it, in its own process (for its RSS)."""
    from measure_zoo_ptq import quantize_ort

    quantize_ort(Path(src), Path(out), np.load(npy))


def accuracy_models() -> dict[str, dict[str, Path]]:
    """bench_policies' bundled models, plus segmenter_wide (the segmenter's calib and val) when shipped."""
    models = bundled_models()
    segmenter = models.get("segmenter")
    if segmenter is not None:
        wide = segmenter["model"].with_name("segmenter_wide.onnx")
        if wide.exists():
            models["segmenter_wide"] = segmenter | {"model": wide}
    return models


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--ort-child":
        ort_child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated; default: every bundled model")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS), help=f"of: {','.join(ALL_VARIANTS)}")
    parser.add_argument("--modelopt-python", default=MODELOPT_PYTHON)
    parser.add_argument("--calib-limit", type=int, default=64)
    parser.add_argument("--eval-limit", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="accuracy", help="result file stem")
    args = parser.parse_args()
    models = accuracy_models()
    chosen = [m for m in args.models.split(",") if m] or list(models)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(ALL_VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: with_labels(models[name], Path(tmp)) for name in chosen}
        for name in chosen:
            npy = calibration_array(models[name]["model"], models[name]["calib"], args.calib_limit,
                                    Path(tmp) / f"{name}.calib.npy")  # fmt: skip
            for variant in variants:
                row = measure(name, models[name], variant, Path(tmp), npy, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = "# INT8 accuracy on the bundled models (bench/bench_accuracy.py)\n\n" + table(rows) + "\n"
    (args.out / f"{args.tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

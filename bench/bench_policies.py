"""Benchmark: placement and correction policies on the bundled models, by `qdqc eval` and `qdqc explain`.

For each bundled model (the detector, and the classifier and text segmenter when present) and each policy
variant (a pipeline text), compile with the model's calibration data, then measure:
- the task metric of `qdqc eval` against FP32 on the validation data (mAP@0.5 of the detector against FP32
  detections, top-1 agreement of the classifier, IoU of the segmenter's binarised map) and the output SQNR;
- from `qdqc explain`: INT8 MAC share, layers kept float, predicted requantizations and standalone Q/DQ.

    python bench/bench_policies.py [--models detector,classifier,segmenter] [--variants default,trt-kernels]
        [--calib-limit 64] [--eval-limit 128]  -> bench/results/policies.md, policies.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qdq_compiler.pipelines import TRT_INT8

DATA = Path(__file__).resolve().parent.parent / "qdq_compiler" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def pipeline(place: str = "place-qdq", before: str = "", after_calibrate: str = "", drop: str = "") -> str:
    """The registered trt-int8 text with a placement variant, optional passes before place-qdq / after
    calibrate (each added only where the pipeline does not run it already) and a pass left out (derived, not
    copied, so the bench follows the pipeline)."""
    default = TRT_INT8.split(",")
    steps = []
    for step in default:
        if step == drop:
            continue
        if step == "place-qdq":
            steps += [before if before not in default else "", place]
        elif step == "calibrate":
            steps += [step, after_calibrate if after_calibrate not in default else ""]
        else:
            steps.append(step)
    return ",".join(step for step in steps if step)


VARIANTS = {
    "default": pipeline(),
    "trt-kernels": pipeline("place-qdq{small-layers=trt-kernels}"),
    "pooled-float": pipeline("place-qdq{pooled-float=true}"),
    "equalize": pipeline(before="equalize"),
    "no-equalize": pipeline(drop="equalize"),
    "correct-bias": pipeline(after_calibrate="correct-bias"),
    "equalize-channels": pipeline(before="equalize-channels"),
    "no-equalize-channels": pipeline(drop="equalize-channels"),
    "all": pipeline("place-qdq{small-layers=trt-kernels,pooled-float=true}", "equalize", "correct-bias"),
}


def bundled_models() -> dict[str, dict[str, Path]]:
    """name -> model, calib and val paths of each bundled model present in qdq_compiler/data."""
    found = {}
    for name in ("detector", "classifier", "segmenter"):
        folder = DATA / name
        model = folder / f"{name}.onnx"
        if model.exists():
            found[name] = {"model": model, "calib": folder / "calib", "val": folder / "val"}
    return found


def _qdqc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qdq_compiler", *args], capture_output=True, text=True)


def measure(name: str, paths: dict[str, Path], variant: str, text: str, work: Path, args) -> dict:
    """Compile one variant and measure it; a failure is recorded with its one-line message."""
    out = work / f"{name}.{variant}.onnx"
    start = time.perf_counter()
    compiled = _qdqc(
        "-q", "compile", str(paths["model"]), "--calib", str(paths["calib"]), "--calib-limit",
        str(args.calib_limit), "--pipeline", text, "--no-check", "-o", str(out),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    row: dict = {"model": name, "variant": variant, "compile_s": round(seconds, 1)}
    if compiled.returncode != 0:
        return row | {"error": compiled.stderr.strip().splitlines()[-1]}
    evaluated = _qdqc(
        "-q", "eval", str(paths["model"]), str(out), "--data", str(paths["val"]), "--limit",
        str(args.eval_limit), "--json", "-",
    )  # fmt: skip
    if evaluated.returncode != 0:
        return row | {"error": evaluated.stderr.strip().splitlines()[-1]}
    report = json.loads(evaluated.stdout)
    metric_name, metric = next(iter(report["metrics"].items()))
    explained = json.loads(_qdqc("explain", str(out), "--json").stdout)
    layers = explained["layers"]
    return row | {
        "metric": metric_name,
        "int8_vs_fp32": metric["int8_vs_fp32"],
        "sqnr_db": report["outputs"][report["task_output"]]["sqnr_db"],
        "int8_mac_share": explained["int8_mac_share"],
        "float_layers": sum(1 for layer in layers if layer["precision"] != "int8"),
        "requantizations": len(explained["requantizations"]),
        "standalone_qdq": len(explained["reformats"]),
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1 else f"{value:.2f}"
    return str(value)


def table(rows: list[dict]) -> str:
    columns = ["model", "variant", "metric", "int8_vs_fp32", "sqnr_db", "int8_mac_share", "float_layers",
               "requantizations", "standalone_qdq", "compile_s"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['variant']} | error: {row['error']} |")
            continue
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated; default: every bundled model")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--calib-limit", type=int, default=64)
    parser.add_argument("--eval-limit", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    models = bundled_models()
    chosen = [m for m in args.models.split(",") if m] or list(models)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            for variant in args.variants.split(","):
                row = measure(name, models[name], variant, VARIANTS[variant], Path(tmp), args)
                print(json.dumps(row), flush=True)
                rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "policies.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = "# Policies on the bundled models (bench/bench_policies.py)\n\n" + table(rows) + "\n"
    (args.out / "policies.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Benchmark: predicted standalone Q/DQ (reformat layers) of qdqc's and Model Optimizer's INT8 models.

For each bundled model (detector, classifier, segmenter) and each tool, quantize with the model's 64
calibration images, then measure with this checkout's `qdqc explain` (standalone Q/DQ, requantizations,
INT8 MAC share) and `qdqc eval` against FP32 on the validation images (task metric, output SQNR):

- `qdqc-before`: `qdqc compile` run by `--before-python` (a Python whose qdq_compiler is the code to compare
  with, e.g. main's), counted by this checkout's prediction and, in `standalone_own`, by its own;
- `qdqc`: this checkout's `qdqc compile` (default pipeline);
- `qdqc-no-int8-mul`: the same with `place-qdq{int8-mul=false}` (the squeeze-excitation Mul left float);
- `modelopt`, `modelopt-max`: `python -m modelopt.onnx.quantization --quantize_mode int8` (default entropy
  calibration, and `--calibration_method max`), run by `--modelopt-python`.

    python bench/bench_standalone_qdq.py --modelopt-python /work/venvs/modelopt/bin/python \
        [--before-python /work/venvs/bench/bin/python] [--models detector] [--tools qdqc,modelopt]
        -> bench/results/standalone_qdq.md, standalone_qdq.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qdq_compiler.pipelines import TRT_INT8
from qdq_compiler.zoo import bundled

DATA = Path(__file__).resolve().parent.parent / "qdq_compiler" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
TOOLS = ("qdqc-before", "qdqc", "qdqc-no-int8-mul", "modelopt", "modelopt-max")


def _run(python: str, *args: str) -> subprocess.CompletedProcess:
    """Run from / so that `python -m qdq_compiler` imports that Python's install, not this folder."""
    return subprocess.run([python, *args], capture_output=True, text=True, check=False, cwd="/")


def _qdqc(python: str, *args: str) -> subprocess.CompletedProcess:
    return _run(python, "-m", "qdq_compiler", *args)


def quantize(tool: str, model: Path, calib_dir: Path, out: Path, args) -> str | None:
    """Write `tool`'s INT8 model of `model` to `out`; the error line when it failed."""
    if tool.startswith("qdqc"):
        python = args.before_python if tool == "qdqc-before" else sys.executable
        extra = []
        if tool == "qdqc-no-int8-mul":
            extra = ["--pipeline", TRT_INT8.replace("place-qdq", "place-qdq{int8-mul=false}")]
        done = _qdqc(python, "-q", "compile", str(model), "--calib", str(calib_dir), "--no-check", *extra,
                     "-o", str(out))  # fmt: skip
    else:
        npy = out.with_suffix(".calib.npy")
        np.save(npy, bundled.load_images(sorted(calib_dir.glob("*.jpg"))))
        source = out.with_suffix(".input.onnx")  # Model Optimizer edits its input in place: give it a copy
        shutil.copyfile(model, source)
        command = ["-m", "modelopt.onnx.quantization", "--onnx_path", str(source), "--quantize_mode", "int8",
                   "--calibration_data_path", str(npy), "--calibration_eps", "cpu", "--high_precision_dtype",
                   "fp32", "--output_path", str(out)]  # fmt: skip
        if tool == "modelopt-max":
            command += ["--calibration_method", "max"]
        done = _run(args.modelopt_python, *command)
    if done.returncode != 0 or not out.exists():
        return (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    return None


def explain(python: str, path: Path) -> dict:
    return json.loads(_qdqc(python, "explain", str(path), "--json").stdout)


def measure(name: str, tool: str, work: Path, args) -> dict:
    folder = DATA / name
    model, out = folder / f"{name}.onnx", work / f"{name}.{tool}.onnx"
    start = time.perf_counter()
    error = quantize(tool, model, folder / "calib", out, args)
    row: dict = {"model": name, "tool": tool, "quantize_s": round(time.perf_counter() - start, 1)}
    if error:
        return row | {"error": error}
    explained = explain(sys.executable, out)
    evaluated = _qdqc(sys.executable, "-q", "eval", str(model), str(out), "--data", str(folder / "val"),
                      "--limit", str(args.eval_limit), "--json", "-")  # fmt: skip
    if evaluated.returncode != 0:
        return row | {"error": evaluated.stderr.strip().splitlines()[-1]}
    report = json.loads(evaluated.stdout)
    metric_name, metric = next(iter(report["metrics"].items()))
    row |= {
        "standalone_qdq": len(explained["reformats"]),
        "requantizations": len(explained["requantizations"]),
        "int8_mac_share": explained["int8_mac_share"],
        "metric": metric_name,
        "int8_vs_fp32": metric["int8_vs_fp32"],
        "sqnr_db": report["outputs"][report["task_output"]]["sqnr_db"],
        "reformats": [f"{r['kind']} {r['node']}: {r['reason']}" for r in explained["reformats"]],
    }
    if tool == "qdqc-before":
        row["standalone_own"] = len(explain(args.before_python, out)["reformats"])
    return row


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1 else f"{value:.2f}"
    return str(value)


def table(rows: list[dict]) -> str:
    columns = ["model", "tool", "standalone_qdq", "standalone_own", "requantizations", "int8_mac_share",
               "metric", "int8_vs_fp32", "sqnr_db", "quantize_s"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['tool']} | error: {row['error']} |")
            continue
        lines.append("| " + " | ".join(_fmt(row.get(c, "-")) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="detector,classifier,segmenter")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--modelopt-python", default=None)
    parser.add_argument("--before-python", default=None)
    parser.add_argument("--eval-limit", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    if not args.modelopt_python:
        tools = [t for t in tools if not t.startswith("modelopt")]
    if not args.before_python:
        tools = [t for t in tools if t != "qdqc-before"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="standalone_qdq.") as tmp:
        for name in args.models.split(","):
            for tool in tools:
                row = measure(name, tool, Path(tmp), args)
                print(json.dumps({k: v for k, v in row.items() if k != "reformats"}), flush=True)
                rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "standalone_qdq.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = "# Standalone Q/DQ on the bundled models (bench/bench_standalone_qdq.py)\n\n" + table(rows) + "\n"
    (args.out / "standalone_qdq.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

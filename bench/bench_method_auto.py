"""Benchmark: `--method auto` against every single calibration method on the bundled models (issue 16, 2).

For each bundled model: `qdqc calibrate` collects the statistics once (one pass over calib/, timed), then
`qdqc compile --calib-cache` compiles from them with each single method (max, percentile 99.999 / 99.99 /
99.9, mse, entropy); with `auto` (which reads calib/ again to validate its choice on the model's outputs);
with `auto --eval` on the val/ files past `--eval-limit` (held out: the measurement never reads them); and
with `auto{validate=false}` (the per-tensor mix alone). Each compile is timed. Every compiled model is
measured by `qdqc eval FP32 INT8 --data val/ --limit N`: the task metric against FP32 and the output SQNR.
For auto, the per-method scores it recorded in the model (`qdq_compiler.calibration_auto`: local SQNR,
end SQNR on its validation data, tensors per method) are printed too.

    python bench/bench_method_auto.py [--models detector,classifier,segmenter] [--eval-limit 128]
        -> bench/results/method_auto.md, method_auto.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

from qdq_compiler.calib.auto import DEFAULT_CANDIDATES
from qdq_compiler.quant.auto_method import AUTO_METADATA_KEY

DATA = Path(__file__).resolve().parent.parent / "qdq_compiler" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
HELD_OUT = "auto --eval held-out"  # auto validated on val/ files past --eval-limit (not measured on)
METHODS = (*DEFAULT_CANDIDATES, "auto", HELD_OUT, "auto{validate=false}")


def bundled_models() -> dict[str, dict[str, Path]]:
    """name -> model, calib and val paths of each bundled model present in qdq_compiler/data."""
    found = {}
    for name in ("detector", "classifier", "segmenter"):
        folder = DATA / name
        model = folder / f"{name}.onnx"
        if model.exists():
            found[name] = {"model": model, "calib": folder / "calib", "val": folder / "val"}
    return found


def _qdqc(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "qdq_compiler", *args], capture_output=True, text=True)
    return done, time.perf_counter() - start


def _error(done: subprocess.CompletedProcess) -> str:
    return (done.stderr.strip().splitlines() or ["(no message)"])[-1]


def held_out(val: Path, skip: int, work: Path) -> Path:
    """A folder linking the files of ``val`` after the first ``skip`` (sorted): data auto may validate on
    that the measurement (`qdqc eval --limit skip`) never reads."""
    folder = work / f"{val.parent.name}-held-out"
    folder.mkdir(exist_ok=True)
    for path in sorted(p for p in val.iterdir() if p.is_file())[skip:]:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def measure(name: str, paths: dict[str, Path], method: str, cache: Path, work: Path, args) -> dict:
    """Compile with one method from the shared statistics, then `qdqc eval` it."""
    out = work / f"{name}.{len(list(work.iterdir()))}.onnx"
    extra = ["--method", method]
    if method == HELD_OUT:
        extra = ["--method", "auto", "--eval", str(held_out(paths["val"], args.eval_limit, work))]
    compiled, seconds = _qdqc(
        "-q", "compile", str(paths["model"]), "--calib-cache", str(cache), "--calib", str(paths["calib"]),
        *extra, "--no-check", "-o", str(out),
    )  # fmt: skip
    row: dict = {"model": name, "method": method, "compile_s": round(seconds, 2)}
    if compiled.returncode != 0:
        return row | {"error": _error(compiled)}
    evaluated, _ = _qdqc(
        "-q", "eval", str(paths["model"]), str(out), "--data", str(paths["val"]), "--limit",
        str(args.eval_limit), "--json", "-",
    )  # fmt: skip
    if evaluated.returncode != 0:
        return row | {"error": _error(evaluated)}
    report = json.loads(evaluated.stdout)
    metric_name, metric = next(iter(report["metrics"].items()))
    row |= {
        "metric": metric_name,
        "int8_vs_fp32": metric["int8_vs_fp32"],
        "sqnr_db": report["outputs"][report["task_output"]]["sqnr_db"],
    }
    recorded = {p.key: p.value for p in onnx.load(out, load_external_data=False).metadata_props}
    if AUTO_METADATA_KEY in recorded:
        row["auto"] = json.loads(recorded[AUTO_METADATA_KEY])
    return row


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1 else f"{value:.2f}"
    return str(value)


def table(rows: list[dict]) -> str:
    columns = ["model", "method", "metric", "int8_vs_fp32", "sqnr_db", "compile_s", "auto kept"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['method']} | error: {row['error']} |")
            continue
        cells = [_fmt(row.get(c, "")) for c in columns[:-1]]
        auto = row.get("auto")
        kept = ""
        if auto:
            counts = ", ".join(f"{m} {n}" for m, n in auto["tensors_per_method"].items())
            kept = f"{auto['chosen']} ({counts})"
        lines.append("| " + " | ".join(cells + [kept]) + " |")
    return "\n".join(lines)


def scores_table(rows: list[dict]) -> str:
    """auto's own per-method scores on each model (recorded in the compiled model)."""
    lines = [
        "| model | variant | tensors in mix | local SQNR dB (mean) | end SQNR dB (calib) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        for variant in row.get("auto", {}).get("variants", []):
            mark = " (kept)" if variant["name"] == row["auto"]["chosen"] else ""
            lines.append(
                f"| {row['model']} | {variant['name']}{mark} | {variant['tensors_in_mix']} | "
                f"{_fmt(variant['local_sqnr_db'])} | {_fmt(variant['end_sqnr_db'])} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated; default: every bundled model")
    parser.add_argument("--methods", default=",".join(METHODS), help="';'-free list, e.g. mse,auto")
    parser.add_argument("--eval-limit", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    models = bundled_models()
    chosen = [m for m in args.models.split(",") if m] or list(models)
    methods = [m for m in _split_methods(args.methods) if m]
    rows, statistics_s = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in chosen:
            paths = models[name]
            cache = work / f"{name}.calib"
            done, statistics_s[name] = _qdqc(
                "-q", "calibrate", str(paths["model"]), "--calib", str(paths["calib"]), "-o", str(cache)
            )
            if done.returncode != 0:
                raise SystemExit(f"{name}: calibrate failed: {_error(done)}")
            print(f"{name}: statistics (one pass over calib/) {statistics_s[name]:.2f} s", flush=True)
            for method in methods:
                row = measure(name, paths, method, cache, work, args)
                print(json.dumps({k: v for k, v in row.items() if k != "auto"}), flush=True)
                rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "method_auto.json").write_text(
        json.dumps({"statistics_s": statistics_s, "rows": rows}, indent=1) + "\n"
    )
    timing = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in statistics_s.items())
    text = (
        "# `--method auto` vs single methods (bench/bench_method_auto.py)\n\n"
        f"Statistics collection (`qdqc calibrate`, once per model): {timing}\n\n"
        + table(rows)
        + "\n\n## auto's per-method scores\n\n"
        + scores_table(rows)
        + "\n"
    )
    (args.out / "method_auto.md").write_text(text)
    print(text)


def _split_methods(text: str) -> list[str]:
    from qdq_compiler.pm.options import split_top_level

    return [item.strip() for item in split_top_level(text, ",")]


if __name__ == "__main__":
    main()

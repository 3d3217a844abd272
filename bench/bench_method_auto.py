"""Benchmark: `--method auto` against every single calibration method on the bundled models (issue 16, 2).

For each bundled model: `qdqc calibrate` collects the statistics once (one pass over calib/, timed), then
`qdqc compile --calib-cache` compiles from them with each single method (max, percentile 99.999 / 99.99 /
99.9, mse, entropy); with `auto` (which reads calib/ again to validate its choice on the model's outputs);
with `auto --eval` on the last `--held-out` val/ files (the measurement never reads them); with
`auto --eval` on exactly the val/ files the measurement reads (auto's choice then is the best measured
variant by construction: the check that validation compiles what is written); and
with `auto{validate=false}` (the per-tensor mix alone). Each compile is timed. Every compiled model is
measured by `qdqc eval FP32 INT8 --data val/ --limit N` (N: up to --eval-limit, short of the held-out
files): the task metric against FP32 and the output SQNR.
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
MEASURED = "auto --eval measured"  # auto validated on exactly the val/ files it is measured on
METHODS = (*DEFAULT_CANDIDATES, "auto", HELD_OUT, MEASURED, "auto{validate=false}")


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


def val_files(val: Path) -> list[Path]:
    return sorted(path for path in val.iterdir() if path.is_file())


def measured_count(val: Path, args) -> int:
    """How many val/ files (the first ones) the measurement reads: up to --eval-limit, never the held-out."""
    return min(args.eval_limit, len(val_files(val)) - args.held_out)


def held_out(val: Path, count: int, work: Path) -> Path:
    """A folder linking the last ``count`` files of ``val`` (sorted): data auto may validate on that the
    measurement never reads."""
    return _linked(val, val_files(val)[-count:], work / f"{val.parent.name}-held-out")


def measured_files(val: Path, count: int, work: Path) -> Path:
    """A folder linking the first ``count`` files of ``val``: exactly what the measurement reads."""
    return _linked(val, val_files(val)[:count], work / f"{val.parent.name}-measured")


def _linked(val: Path, files: list[Path], folder: Path) -> Path:
    if not folder.exists():
        folder.mkdir()
        for path in files:
            (folder / path.name).symlink_to(path.resolve())
    return folder


def measure(name: str, paths: dict[str, Path], method: str, cache: Path, work: Path, args) -> dict:
    """Compile with one method from the shared statistics, then `qdqc eval` it."""
    out = work / f"{name}.{len(list(work.iterdir()))}.onnx"
    extra = ["--method", method]
    if method == HELD_OUT:
        extra = ["--method", "auto", "--eval", str(held_out(paths["val"], args.held_out, work))]
    if method == MEASURED:  # every measured sample (auto's default samples=64 would read fewer)
        folder = measured_files(paths["val"], measured_count(paths["val"], args), work)
        extra = ["--method", "auto{samples=100000}", "--eval", str(folder)]
    if method.startswith("auto") and "validate=false" not in method:
        extra += ["--workers", str(args.workers)]
    compiled, seconds = _qdqc(
        "-q", "compile", str(paths["model"]), "--calib-cache", str(cache), "--calib", str(paths["calib"]),
        *extra, "--no-check", "-o", str(out),
    )  # fmt: skip
    row: dict = {"model": name, "method": method, "compile_s": round(seconds, 2)}
    if compiled.returncode != 0:
        return row | {"error": _error(compiled)}
    evaluated, _ = _qdqc(
        "-q", "eval", str(paths["model"]), str(out), "--data", str(paths["val"]), "--limit",
        str(measured_count(paths["val"], args)), "--json", "-",
    )  # fmt: skip
    if evaluated.returncode != 0:
        return row | {"error": _error(evaluated)}
    report = json.loads(evaluated.stdout)
    metric_name, metric = next(iter(report["metrics"].items()))
    row |= {
        "samples": report["samples"] if "samples" in report else measured_count(paths["val"], args),
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
    columns = ["model", "method", "samples", "metric", "int8_vs_fp32", "sqnr_db", "compile_s", "auto kept"]
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
    """auto's own per-method scores (recorded in the compiled model) of each validated auto run."""
    lines = [
        "| model | run | variant | tensors in mix | local SQNR dB (mean) | end SQNR dB (validation data) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        auto = row.get("auto", {})
        if not auto.get("validated"):
            continue
        for variant in auto["variants"]:
            mark = " (kept)" if variant["name"] == auto["chosen"] else ""
            cells = [row["model"], row["method"], variant["name"] + mark, str(variant["tensors_in_mix"])]
            cells += [_fmt(variant["local_sqnr_db"]), _fmt(variant["end_sqnr_db"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated; default: every bundled model")
    parser.add_argument("--methods", default=",".join(METHODS), help="';'-free list, e.g. mse,auto")
    parser.add_argument("--eval-limit", type=int, default=128, help="val/ files measured on (the first)")
    parser.add_argument("--held-out", type=int, default=32, help="last val/ files for `auto --eval`")
    parser.add_argument("--workers", type=int, default=2, help="--workers of the auto runs")
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

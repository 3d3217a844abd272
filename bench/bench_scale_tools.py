"""End to end at scale: ``qdqc compile`` against Model Optimizer and onnxruntime's quantizer, in one run.

Run: ``python bench/bench_scale_tools.py [--sizes 1000,5000,20000] [--shapes fanin,chain]
[--max-seconds 180] [--modelopt-python PATH]``

The graphs are ``bench_ir.py``'s (``qdq_compiler.models.build_scale_model``). Per shape and size, every
tool quantizes the same float model to INT8 Q/DQ with the same calibration data (one seeded ``[1, 4, 4, 4]``
sample in a ``.npy`` file), each in its own process, timed from start to written file (interpreter start,
imports, calibration inference, load and save included):

- ``qdqc``: ``qdqc compile MODEL --calib CALIB.npy -o OUT`` (default ``trt-int8`` and its numerical
  self-check), and ``qdqc (no check)`` with ``--no-check``;
- ``ModelOpt``: ``python -m modelopt.onnx.quantization --quantize_mode int8 --calibration_method max``
  (its own onnxruntime calibration), run by ``--modelopt-python`` / ``$MODELOPT_PYTHON`` (default: this
  interpreter); a row says why when it cannot be imported;
- ``onnxruntime``: ``quantize_static`` (QDQ, per-channel, symmetric INT8, MinMax calibration).

A tool past ``--max-seconds`` is killed and shown as ``> CAP``. The ratio columns divide each other tool's
time by qdqc's (with its self-check): above 1 means qdqc was faster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from bench_ptq import log_tail, modelopt_args, ort_static_options, probe_modelopt, run_child

from qdq_compiler.models.synthetic import SCALE_SHAPES, build_scale_model

TOOLS = ("qdqc", "qdqc (no check)", "ModelOpt", "onnxruntime")


def worker_onnxruntime(model: str, calib: str, output: str) -> None:
    """onnxruntime's static QDQ quantizer on ``model`` with the samples in ``calib``."""
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]  # its tools import torch when present
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, quantize_static

    name = onnx.load(model, load_external_data=False).graph.input[0].name
    samples = np.load(calib)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{name: samples[i : i + 1]} for i in range(len(samples))])

        def get_next(self):
            return next(self._batches, None)

    quantize_static(
        model, output, Reader(), calibrate_method=CalibrationMethod.MinMax, **ort_static_options()
    )


def tool_commands(tool: str, model: Path, calib: Path, out: Path, modelopt_python: str) -> list[str]:
    """The command line that runs ``tool`` on ``model``."""
    if tool.startswith("qdqc"):
        check = ["--no-check"] if tool == "qdqc (no check)" else []
        compile_ = [sys.executable, "-m", "qdq_compiler", "compile", str(model), "--calib", str(calib)]
        return [*compile_, *check, "-o", str(out)]
    if tool == "ModelOpt":
        source = out.with_suffix(".input.onnx")  # Model Optimizer writes into its input: give it a copy
        shutil.copyfile(model, source)
        return [
            modelopt_python,
            "-m",
            "modelopt.onnx.quantization",
            *modelopt_args(source, calib, "max", out),
        ]
    return [sys.executable, str(Path(__file__).resolve()), "--worker", str(model), str(calib), str(out)]


def measure(shape: str, size: int, folder: Path, cap: float, modelopt: tuple[str, bool, str]) -> dict:
    """Seconds per tool for one graph (None past the cap); a failure's reason instead of seconds."""
    model, calib = folder / f"{shape}_{size}.onnx", folder / f"{shape}_{size}.npy"
    onnx.save_model(build_scale_model(shape, size), model)
    np.save(calib, np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32))
    python, usable, detail = modelopt
    row: dict = {}
    for tool in TOOLS:
        if tool == "ModelOpt" and not usable:
            row[tool] = f"not run: {detail}"
            continue
        out = folder / f"{shape}_{size}.{tool.split()[0]}{len(row)}.onnx"
        log = out.with_suffix(".log")
        done = run_child(tool_commands(tool, model, calib, out, python), log, cap)
        if done.timed_out:
            row[tool] = None
        elif done.returncode != 0 or not out.exists():
            row[tool] = f"failed ({done.returncode}): {log_tail(log)}"
        else:
            row[tool] = done.wall_s
        out.unlink(missing_ok=True)
    return row


def _cell(value: object, cap: float) -> str:
    if value is None:
        return f"> {cap:.0f}"
    return f"{value:.1f}" if isinstance(value, float) else "-"


def _ratio(value: object, base: object, cap: float) -> str:
    if not isinstance(base, float):
        return "-"
    if value is None:
        return f"> {cap / base:.1f}x"
    return f"{value / base:.1f}x" if isinstance(value, float) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--shapes", default="fanin,chain")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="time cap per tool and case")
    parser.add_argument("--modelopt-python", default=os.environ.get("MODELOPT_PYTHON", sys.executable))
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_onnxruntime(*args.worker)
        return
    shapes = [s.strip() for s in args.shapes.split(",")]
    unknown = sorted(set(shapes) - set(SCALE_SHAPES))
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; expected {', '.join(SCALE_SHAPES)}")
    usable, detail = probe_modelopt(args.modelopt_python)
    print(f"ModelOpt: {detail}", flush=True)
    print(
        "\n| shape | nodes | qdqc s | qdqc (no check) s | ModelOpt s | onnxruntime s "
        "| ModelOpt / qdqc | onnxruntime / qdqc |\n|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    notes = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_tools.") as tmp:
        for shape in shapes:
            for size in (int(s) for s in args.sizes.split(",")):
                cap = args.max_seconds
                row = measure(shape, size, Path(tmp), cap, (args.modelopt_python, usable, detail))
                cells = [_cell(row[tool], cap) for tool in TOOLS]
                ratios = [_ratio(row[tool], row["qdqc"], cap) for tool in ("ModelOpt", "onnxruntime")]
                print(f"| {shape} | {size} | " + " | ".join(cells + ratios) + " |", flush=True)
                notes += [f"{shape} {size} {t}: {row[t]}" for t in TOOLS if isinstance(row[t], str)]
    for note in notes:
        print(note)
    print(json.dumps({"max_seconds": args.max_seconds, "modelopt": detail}))


if __name__ == "__main__":
    main()

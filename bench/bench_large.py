"""Benchmark: compile a model whose weights exceed protobuf's 2 GB limit (external data), end to end.

Run: ``python bench/bench_large.py`` (about 2.35 GB of weights; needs ~8 GB of free disk in the temporary
folder and several GB of RAM) or ``python bench/bench_large.py --gigabytes 0.2`` for a quick run.

What it does, in a temporary folder (``--workdir`` keeps it):

1. builds a deterministic CNN (two small Convs, then a chain of MatMul+Add+Relu layers with huge weight
   matrices but activations of a few thousand values) and writes it as ``model.onnx`` + ``model.onnx.data``,
   tensor by tensor, so the builder itself never holds more than one weight matrix;
2. writes 8 calibration samples (``calib.npy``);
3. runs ``qdqc compile model.onnx -o out/compiled.onnx --calib calib.npy --timing`` in a child process and
   reads that child's wall time, peak RSS (``ru_maxrss`` from ``os.wait4``) and per-pass times;
4. loads the float and the compiled model in onnxruntime from their files (external data) and prints the
   SQNR of the compiled model's output against the float one on the calibration samples.

Prints a markdown table and writes it to ``bench/results/large.md`` (raw numbers: ``large.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 20261203
IMAGE = (3, 32, 32)  # one sample; activations after the convs: 16 x 16 x 16 = 4096 values
SAMPLES = 8


def layer_widths(gigabytes: float) -> list[int]:
    """Widths of the MatMul chain, 4096 -> 4w -> 4w -> 3w -> w -> 10, with w chosen to reach the size."""
    # floats = 4096*4w + 16w^2 + 12w^2 + 3w^2 (+ small) ~= 31 w^2 for the sizes used here
    target_floats = gigabytes * 1e9 / 4
    w = 256
    while 4096 * 4 * w + 31 * w * w < target_floats:
        w += 256
    return [4096, 4 * w, 4 * w, 3 * w, w, 10]


def build_large_model(folder: Path, gigabytes: float) -> tuple[Path, int]:
    """Write ``model.onnx`` + ``model.onnx.data`` into ``folder``; return the model path and weight bytes.

    Deterministic: the same ``gigabytes`` gives the same files, byte for byte.
    """
    rng = np.random.default_rng(SEED)
    model_path = folder / "model.onnx"
    data_name = model_path.name + ".data"
    initializers: list[TensorProto] = []
    offset = 0

    with open(folder / data_name, "wb") as data_file:

        def add(name: str, array: np.ndarray) -> None:
            nonlocal offset
            array = np.ascontiguousarray(array, dtype=np.float32)
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape)
            tensor.data_location = TensorProto.EXTERNAL
            where = (("location", data_name), ("offset", str(offset)), ("length", str(array.nbytes)))
            for key, value in where:
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            data_file.write(array.tobytes())
            offset += array.nbytes
            initializers.append(tensor)

        nodes = []
        add("conv1.w", rng.standard_normal((16, 3, 3, 3), dtype=np.float32) * 0.3)
        add("conv1.b", rng.standard_normal(16, dtype=np.float32) * 0.1)
        add("conv2.w", rng.standard_normal((16, 16, 3, 3), dtype=np.float32) * 0.1)
        add("conv2.b", rng.standard_normal(16, dtype=np.float32) * 0.1)
        nodes += [
            helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
            helper.make_node(
                "Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], "conv2", pads=[1, 1, 1, 1], strides=[2, 2]
            ),
            helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
            helper.make_node("Flatten", ["r2"], ["h0"], "flatten", axis=1),
        ]
        widths = layer_widths(gigabytes)
        previous = "h0"
        for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            weight = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
            weight *= np.float32(1.6 / math.sqrt(fan_in))
            add(f"fc{index}.w", weight)
            del weight
            add(f"fc{index}.b", rng.standard_normal(fan_out, dtype=np.float32) * 0.05)
            nodes += [
                helper.make_node("MatMul", [previous, f"fc{index}.w"], [f"m{index}"], f"fc{index}"),
                helper.make_node("Add", [f"m{index}", f"fc{index}.b"], [f"a{index}"], f"fc{index}_bias"),
            ]
            previous = f"a{index}"
            if index < len(widths) - 2:
                nodes.append(helper.make_node("Relu", [previous], [f"h{index + 1}"], f"fc{index}_relu"))
                previous = f"h{index + 1}"

    graph = helper.make_graph(
        nodes,
        "large_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *IMAGE])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, widths[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_large")
    model.ir_version = 8
    model_path.write_bytes(model.SerializeToString())
    return model_path, offset


def calibration_samples() -> np.ndarray:
    """8 deterministic image-like samples in [0, 1], stacked on the batch axis."""
    rng = np.random.default_rng(SEED + 1)
    coarse = rng.random((SAMPLES, IMAGE[0], 4, 4), dtype=np.float32)
    return np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3).astype(np.float32)


def run_child(args: list[str]) -> tuple[float, int, str, str, int]:
    """Run a command; return its wall seconds, peak RSS in bytes, stdout, stderr and exit code."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(args, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return seconds, usage.ru_maxrss * 1024, out.read().decode(), err.read().decode(), child.returncode


def pass_times(text: str) -> dict[str, float]:
    """Seconds per pass from the ``--timing`` table (a pass that runs twice is summed)."""
    times: dict[str, float] = {}
    for match in re.finditer(r"^\s+([\d.]+) ms\s+[\d.]+%\s+(\S.*)$", text, re.MULTILINE):
        name = match.group(2).strip()
        if name != "total" and not name.startswith("("):  # compile's "(self-check)" row is not a pass
            times[name] = times.get(name, 0.0) + float(match.group(1)) / 1000
    return times


def _rss_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    """Restart VmHWM from the current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def profile_phases(model: str, calib: str, output: str) -> None:
    """Child mode: ``qdqc compile`` in this process, printing the peak RSS of each phase as JSON.

    Phases: preparing the calibration (which loads and hashes the model), loading, each pass, saving.
    """
    import qdq_compiler.cli as cli
    from qdq_compiler.pm.instruments import Instrument

    peaks: list[tuple[str, int, float]] = []
    clock = [time.perf_counter()]

    def close(name: str) -> None:
        peaks.append((name, _rss_bytes("VmHWM"), time.perf_counter() - clock[0]))
        _reset_peak()
        clock[0] = time.perf_counter()

    def measured(name: str, function):
        def run(*args, **kwargs):
            close("(before " + name + ")")
            result = function(*args, **kwargs)
            close(name)
            return result

        return run

    class PeakPerPass(Instrument):
        def before_pass(self, index, pass_, model):
            close(f"(between passes, before {pass_.name})")

        def after_pass(self, index, pass_, model, result):
            close(pass_.name)

    original_instruments = cli._instruments_for

    def instruments(manager, opts):
        timing = original_instruments(manager, opts)
        manager.instruments.append(PeakPerPass())
        return timing

    cli._instruments_for = instruments
    cli.prepare_pipeline = measured("prepare calibration (load, hash, open data)", cli.prepare_pipeline)
    cli.load_model = measured("load model", cli.load_model)
    cli.save_model = measured("save model", cli.save_model)
    _reset_peak()
    code = cli.main(["-q", "compile", model, "-o", output, "--calib", calib])
    close("(after save)")
    print(json.dumps({"exit": code, "phases": peaks}))


def outputs_of(path: Path, samples: np.ndarray) -> np.ndarray:
    """The model's output on every sample, run by onnxruntime from its file (external data beside it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: sample[None]})[0] for sample in samples])


def output_sqnr(float_path: Path, compiled_path: Path, samples: np.ndarray) -> float:
    """SQNR (dB) of the compiled model's output vs the float model's, both run from their files."""
    from qdq_compiler.accuracy.numerics import sqnr_db

    return sqnr_db(outputs_of(float_path, samples), outputs_of(compiled_path, samples))


def float_save(workdir: Path, model_path: Path, samples: np.ndarray) -> dict:
    """``qdqc compile --pipeline prepare``: a float output past 1.8 GB, so saved with ``<name>.data``."""
    output = workdir / "out-float" / "prepared.onnx"
    command = [
        sys.executable,
        "-m",
        "qdq_compiler",
        "compile",
        str(model_path),
        "-o",
        str(output),
        "--pipeline",
        "prepare",
        "--timing",
    ]
    print("running:", " ".join(command), flush=True)
    seconds, peak_rss, stdout, stderr, code = run_child(command)
    if code != 0:
        raise SystemExit(f"qdqc compile --pipeline prepare failed (exit {code}):\n{stdout}\n{stderr}")
    files = {p.name: p.stat().st_size for p in sorted(output.parent.iterdir())}
    difference = np.abs(outputs_of(output, samples) - outputs_of(model_path, samples)).max()
    return {
        "wall_s": round(seconds, 1),
        "peak_rss_bytes": peak_rss,
        "files": files,
        "max_abs_diff_vs_input": float(difference),
    }


def bench(workdir: Path, gigabytes: float) -> dict:
    start = time.perf_counter()
    model_path, weight_bytes = build_large_model(workdir, gigabytes)
    build_seconds = time.perf_counter() - start
    samples = calibration_samples()
    np.save(workdir / "calib.npy", samples)
    output = workdir / "out" / "compiled.onnx"
    command = [
        sys.executable,
        "-m",
        "qdq_compiler",
        "compile",
        str(model_path),
        "-o",
        str(output),
        "--calib",
        str(workdir / "calib.npy"),
        "--timing",
    ]
    print("running:", " ".join(command), flush=True)
    seconds, peak_rss, stdout, stderr, code = run_child(command)
    if code != 0:
        raise SystemExit(f"qdqc compile failed (exit {code}):\n{stdout}\n{stderr}")
    passes = pass_times(stdout + stderr)
    data_file = output.with_name(output.name + ".data")
    output_bytes = output.stat().st_size + (data_file.stat().st_size if data_file.exists() else 0)
    sqnr = output_sqnr(model_path, output, samples)
    prepared = float_save(workdir, model_path, samples)
    return {
        "float_output": prepared,
        "weights_bytes": weight_bytes,
        "model_files": sorted(p.name for p in workdir.iterdir() if p.is_file()),
        "output_files": sorted(p.name for p in output.parent.iterdir()),
        "build_s": round(build_seconds, 1),
        "compile_wall_s": round(seconds, 1),
        "pass_s": {name: round(value, 2) for name, value in passes.items()},
        "outside_passes_s": round(seconds - sum(passes.values()), 1),
        "peak_rss_bytes": peak_rss,
        "peak_rss_over_weights": round(peak_rss / weight_bytes, 2),
        "output_bytes": output_bytes,
        "sqnr_db": round(sqnr, 2),
    }


def phase_peaks(workdir: Path) -> list[tuple[str, int, float]]:
    """Run the compile again in a profiling child; (phase, peak RSS bytes, seconds) in order."""
    command = [
        sys.executable,
        __file__,
        "--profile-child",
        str(workdir / "model.onnx"),
        str(workdir / "calib.npy"),
        str(workdir / "out-profiled" / "compiled.onnx"),
    ]
    _, _, stdout, stderr, code = run_child(command)
    if code != 0:
        raise SystemExit(f"profiling run failed (exit {code}):\n{stdout}\n{stderr}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return [tuple(item) for item in result["phases"] if item[2] > 0.05 or not item[0].startswith("(")]


def markdown(result: dict) -> str:
    gb = 1e9
    lines = [
        "| weights | compile wall | peak RSS | RSS / weights | output (.onnx + .data) | SQNR vs float |",
        "|---|---|---|---|---|---|",
        f"| {result['weights_bytes'] / gb:.2f} GB | {result['compile_wall_s']:.1f} s "
        f"| {result['peak_rss_bytes'] / gb:.2f} GB | {result['peak_rss_over_weights']:.2f} "
        f"| {result['output_bytes'] / gb:.2f} GB | {result['sqnr_db']:.1f} dB |",
        "",
        "| phase | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.2f} |" for name, value in result["pass_s"].items()]
    lines.append(f"| start-up, load, hashing, save (outside passes) | {result['outside_passes_s']:.1f} |")
    saved = result["float_output"]
    lines += [
        "",
        "| `--pipeline prepare` (float output, saved with external data) | wall | peak RSS | files "
        "| max abs diff vs input |",
        "|---|---|---|---|---|",
        f"| | {saved['wall_s']:.1f} s | {saved['peak_rss_bytes'] / gb:.2f} GB | "
        + ", ".join(f"{name} {size / gb:.3f} GB" for name, size in saved["files"].items())
        + f" | {saved['max_abs_diff_vs_input']:.3g} |",
    ]
    if result.get("phases"):
        lines += ["", "| phase (profiled run) | seconds | peak RSS | peak / weights |", "|---|---|---|---|"]
        lines += [
            f"| {name} | {seconds:.1f} | {peak / gb:.2f} GB | {peak / result['weights_bytes']:.2f} |"
            for name, peak, seconds in result["phases"]
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.35, help="weights to generate (default 2.35)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: temporary)")
    parser.add_argument(
        "--phases", action="store_true", help="compile a second time in a profiling child: peak RSS per phase"
    )
    parser.add_argument("--profile-child", nargs=3, metavar=("MODEL", "CALIB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_child:
        profile_phases(*args.profile_child)
        return
    with tempfile.TemporaryDirectory(prefix="qdqc-bench-large-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = bench(workdir, args.gigabytes)
        if args.phases:
            result["phases"] = phase_peaks(workdir)
    table = markdown(result)
    print(table)
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "large.md").write_text(table)
    (RESULTS / "large.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

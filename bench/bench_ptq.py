"""Benchmark: post-training INT8 quantization of the same models by qdqc, onnxruntime and NVIDIA ModelOpt.

Run: ``python bench/bench_ptq.py`` (full run, 2-4 min on 2 cores) or ``python bench/bench_ptq.py --quick``.
Prints one markdown table and writes it to ``bench/results/ptq.md`` and the raw numbers to
``bench/results/ptq.json``. See ``bench/README.md`` for what every column means.

Every tool runs in its own subprocess, so the wall time (measured here, in the parent) and the peak RSS
(VmHWM the child reads from /proc/self/status at its end) belong to that tool alone; both include
interpreter start, imports, model load and save. The quantized models are then analysed here: Q/DQ counts,
share of Conv MACs that read INT8 activations and INT8 weights, Concat/MaxPool scale mismatches, and output
SQNR against the FP32 model on held-out inputs, run by onnxruntime CPU with graph optimizations disabled (so
every Q/DQ is executed as written).

ModelOpt's ``[onnx]`` extra pulls a CUDA torch, ``cupy-cuda12x``, ``onnxruntime-gpu`` and pins ``onnx~=1.21``,
so it is run from whatever interpreter ``--modelopt-python`` (or ``$MODELOPT_PYTHON``) names; by default the
current one. See bench/README.md for a CPU-only install.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
MODELOPT_INSTALL_HINT = (
    "pip install torch==2.13.0 nvidia-modelopt onnx-graphsurgeon onnxconverter-common onnxslim polygraphy "
    "ml_dtypes lief cppimport onnxscript"
)


# ----------------------------------------------------------------------------------------------------
# What is run
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    tool: str  # 'qdqc' | 'ort' | 'modelopt'
    method: str  # the tool's own calibration method name

    @property
    def label(self) -> str:
        return f"{self.tool} ({self.method})"

    @property
    def key(self) -> str:
        return f"{self.tool}_{self.method}"


PRIMARY = [Variant("qdqc", "entropy"), Variant("ort", "entropy"), Variant("modelopt", "entropy")]
EXTRA = [
    Variant("qdqc", "max"),
    Variant("qdqc", "percentile"),
    Variant("qdqc", "mse"),
    Variant("ort", "minmax"),
    Variant("modelopt", "max"),
]
# ORT's Entropy with TensorRT's 2048 histogram bins: its KL search is pure Python, ~100 s for the r160 YOLO.
SLOW = [Variant("ort", "entropy2048")]
QDQC_PIPELINE = "trt-int8{{method={method}}}"  # the compile pipeline with the variant's method


@dataclass(frozen=True)
class ModelSpec:
    key: str
    label: str
    family: str  # 'yolov7_tiny' | 'resnet_blocks'
    resolution: int
    width: float

    def build(self) -> onnx.ModelProto:
        from qdq_compiler.models import build_resnet_blocks, build_yolov7_tiny

        if self.family == "yolov7_tiny":
            return build_yolov7_tiny(width=self.width, resolution=self.resolution)
        return build_resnet_blocks(width=int(self.width), resolution=self.resolution)


def model_specs(quick: bool, names: list[str] | None) -> list[ModelSpec]:
    if quick:
        specs = [
            ModelSpec("yolo160", "yolov7-tiny w0.25 r160", "yolov7_tiny", 160, 0.25),
            ModelSpec("resnet160", "resnet-blocks w32 r160", "resnet_blocks", 160, 32),
        ]
    else:
        specs = [
            ModelSpec("yolo320", "yolov7-tiny w0.25 r320", "yolov7_tiny", 320, 0.25),
            ModelSpec("yolo640", "yolov7-tiny w0.25 r640", "yolov7_tiny", 640, 0.25),
            ModelSpec("resnet128", "resnet-blocks w32 r128", "resnet_blocks", 128, 32),
        ]
    if names:
        known = {s.key: s for s in specs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"unknown model(s) {unknown}; choose from {sorted(known)}")
        specs = [known[n] for n in names]
    return specs


# ----------------------------------------------------------------------------------------------------
# Deterministic image-like data: smooth random fields in [0, 1]
# ----------------------------------------------------------------------------------------------------
def _interp_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid) matrix of linear-interpolation weights (align-corners upsampling)."""
    pos = np.linspace(0.0, grid - 1, size)
    low = np.minimum(np.floor(pos).astype(int), grid - 2) if grid > 1 else np.zeros(size, int)
    frac = pos - low
    m = np.zeros((size, grid), np.float64)
    m[np.arange(size), low] = 1.0 - frac
    if grid > 1:
        m[np.arange(size), low + 1] += frac
    return m


def smooth_images(count: int, channels: int, res: int, seed: int) -> np.ndarray:
    """`count` images [C, res, res]: sum of bilinearly upsampled uniform-noise octaves, each image min-max
    normalised to [0, 1] after a random contrast/brightness window, so samples differ in range too."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, channels, res, res), np.float64)
    for grid, amplitude in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.125)):
        g = min(grid, res)
        noise = rng.random((count, channels, g, g))
        m = _interp_matrix(res, g)
        out += amplitude * np.einsum("ij,ncjk,lk->ncil", m, noise, m, optimize=True)
    low = out.min(axis=(1, 2, 3), keepdims=True)
    high = out.max(axis=(1, 2, 3), keepdims=True)
    out = (out - low) / (high - low)
    # a random sub-window of [0, 1] per image (darker / brighter / lower-contrast images)
    lo = rng.uniform(0.0, 0.3, (count, 1, 1, 1))
    hi = rng.uniform(0.7, 1.0, (count, 1, 1, 1))
    return (lo + out * (hi - lo)).astype(np.float32)


def input_spec(proto: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise SystemExit("bench_ptq supports single-input models")
    dims = tuple(d.dim_value for d in inputs[0].type.tensor_type.shape.dim)
    return inputs[0].name, dims


def split_batches(stacked: np.ndarray, batch: int) -> list[np.ndarray]:
    return [stacked[i : i + batch] for i in range(0, len(stacked), batch)]


# ----------------------------------------------------------------------------------------------------
# Workers (run as `bench_ptq.py --worker TOOL ...` in a child process)
# ----------------------------------------------------------------------------------------------------
def _self_peak_rss_mb() -> float:
    """Peak RSS of this process since its exec (VmHWM), or of any child it ran, in MB.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux folds the pre-exec memory image into it, i.e. the RSS of
    the parent that forked us (here the benchmark driver, holding models and ORT sessions).
    """
    import resource

    peak_kb = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak_kb = float(line.split()[1])
    except OSError:
        peak_kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    children_kb = float(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return max(peak_kb, children_kb) / 1024.0


def worker_qdqc(args: argparse.Namespace) -> dict[str, Any]:
    from qdq_compiler.ir import load_model, save_model
    from qdq_compiler.pm import PassContext, PassManager

    proto = onnx.load(args.input)
    pipeline = QDQC_PIPELINE.format(method=args.method)
    start = time.perf_counter()
    model = load_model(proto)
    # As `qdqc compile --calib FILE.npy` does: the .npy path is read memory-mapped, batch by batch.
    results = PassManager(pipeline).run(model, PassContext(calibration_data=args.calib))
    quantize_s = time.perf_counter() - start
    save_model(model, args.output)
    stats = {}
    for r in results:
        for k, v in getattr(r, "statistics", {}).items():
            stats[k] = stats.get(k, 0) + v if isinstance(v, (int, float)) else v
    return {"quantize_s": quantize_s, "pipeline": pipeline, "pass_statistics": stats}


def worker_ort(args: argparse.Namespace) -> dict[str, Any]:
    # quant_pre_process imports onnxruntime.tools, whose __init__ imports torch whenever torch is installed
    # (for PyTorch export helpers that static quantization never uses): +180 MB RSS and ~2 s that depend on
    # what else is in the environment. Hide torch so the ORT rows measure ORT alone.
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    info: dict[str, Any] = {}
    start = time.perf_counter()
    source = args.input
    pre = str(Path(args.output).with_suffix(".pre.onnx"))
    try:
        quant_pre_process(args.input, pre)
        source = pre
        info["preprocess"] = "quant_pre_process ok"
    except Exception as error:  # the row says so; quantize the raw model instead
        info["preprocess"] = f"quant_pre_process failed ({type(error).__name__}: {error}); raw model used"
    proto = onnx.load(source)
    name, dims = input_spec(proto)
    stacked = np.load(args.calib)
    batches = split_batches(stacked, dims[0] or 1)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{name: b} for b in batches])

        def get_next(self):
            return next(self._it, None)

    method = {
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
        "entropy2048": CalibrationMethod.Entropy,
    }[args.method]
    cache = None
    if args.method == "entropy2048":
        # quantize_static builds its Entropy calibrator with num_bins=128, num_quantized_bins=128 and has no
        # option to change them: the KL search then has (almost) a single candidate and returns the max.
        # Calibrate with TensorRT's 2048 bins through ORT's own calibrator, hand the ranges over as a cache.
        import tempfile

        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
        with tempfile.TemporaryDirectory(prefix="bench_ptq.") as tmp:
            calibrator = create_calibrator(
                Path(source),
                ops,
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=CalibrationMethod.Entropy,
                extra_options={"symmetric": True, "num_bins": 2048, "num_quantized_bins": 128},
            )
            calibrator.collect_data(Reader())
            ranges = calibrator.compute_data()
            del calibrator
        cache = str(Path(args.output).with_suffix(".calib.json"))
        save_tensors_data(ranges, cache)
    quantize_static(
        source,
        args.output,
        None if cache else Reader(),
        calibrate_method=method,
        **ort_static_options(),
        **({"calibration_cache_path": cache} if cache else {}),
    )
    info["quantize_s"] = time.perf_counter() - start
    info["torch_hidden"] = sys.modules.get("torch") is None
    return info


def worker_modelopt(args: argparse.Namespace) -> dict[str, Any]:
    """`python -m modelopt.onnx.quantization ARGS`, in this process so that its peak RSS can be read."""
    import runpy

    sys.argv = ["modelopt.onnx.quantization", *json.loads(args.modelopt_args)]
    try:
        runpy.run_module("modelopt.onnx.quantization", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        if done.code not in (None, 0):
            raise
    return {"command": "python -m " + " ".join(sys.argv)}


def ort_static_options() -> dict[str, Any]:
    """The keyword arguments of onnxruntime's ``quantize_static`` for what TensorRT runs: QDQ, per-channel
    weights, symmetric INT8 activations and weights (the calibration method is each caller's)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    return {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True},
    }


def modelopt_args(model: Path, calib: Path, method: str, output: Path) -> list[str]:
    """Arguments of ``python -m modelopt.onnx.quantization``: INT8 with ``method``, calibrated on the CPU,
    float32 outside the quantized layers. Model Optimizer writes into ``model``: give it a copy."""
    return [
        "--onnx_path",
        str(model),
        "--quantize_mode",
        "int8",
        "--calibration_data_path",
        str(calib),
        "--calibration_method",
        method,
        "--calibration_eps",
        "cpu",
        "--high_precision_dtype",
        "fp32",
        "--output_path",
        str(output),
    ]


def run_worker(args: argparse.Namespace) -> None:
    fn = {"qdqc": worker_qdqc, "ort": worker_ort, "modelopt": worker_modelopt}[args.worker]
    info = fn(args)
    info["peak_rss_mb"] = _self_peak_rss_mb()
    Path(args.report).write_text(json.dumps(info, indent=1, default=str))


# ----------------------------------------------------------------------------------------------------
# Running a child: wall time here, peak RSS of that child from wait4
# ----------------------------------------------------------------------------------------------------
@dataclass
class ChildRun:
    returncode: int | None
    wall_s: float
    maxrss_mb: float
    timed_out: bool
    log: Path


def run_child(cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> ChildRun:
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(proc.returncode, wall, usage.ru_maxrss / 1024.0, fired.is_set(), log)


def log_tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    keep = [ln.strip() for ln in text if ln.strip()][-lines:]
    return " | ".join(keep)[-400:]


def probe_modelopt(python: str) -> tuple[bool, str]:
    """(usable, detail): can `python -m modelopt.onnx.quantization` run here, and which versions."""
    code = (
        "import modelopt, torch, onnx, onnxruntime;"
        "import modelopt.onnx.quantization;"
        "print(f'{modelopt.__version__} (torch {torch.__version__}, torch CUDA {torch.version.cuda}, "
        "onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__})')"
    )
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"{python}: {error}"
    if done.returncode != 0:
        last = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        return (
            False,
            f"{python} cannot import modelopt.onnx.quantization ({last[-1] if last else 'no output'})",
        )
    return True, done.stdout.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------------
# Analysis of a quantized model (plain onnx, so it reads any tool's output)
# ----------------------------------------------------------------------------------------------------
QUANTIZE = "QuantizeLinear"
DEQUANTIZE = "DequantizeLinear"
SCALE_RTOL = 1e-6


class GraphView:
    def __init__(self, proto: onnx.ModelProto):
        self.proto = proto
        graph = proto.graph
        self.nodes = list(graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.init_shapes = {i.name: tuple(i.dims) for i in graph.initializer}
        self._init_protos = {i.name: i for i in graph.initializer}
        self._constants = {
            n.output[0]: n for n in self.nodes if n.op_type == "Constant" and n.output and n.output[0]
        }
        self.shapes = self._infer_shapes()

    def _infer_shapes(self) -> dict[str, tuple[int | None, ...]]:
        try:
            inferred = onnx.shape_inference.infer_shapes(self.proto, data_prop=True)
        except Exception:
            inferred = self.proto
        shapes: dict[str, tuple[int | None, ...]] = {}
        g = inferred.graph
        for info in list(g.input) + list(g.value_info) + list(g.output):
            t = info.type.tensor_type
            if info.type.HasField("tensor_type") and t.HasField("shape"):
                shapes[info.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim
                )
        shapes.update(self.init_shapes)
        return shapes

    def constant(self, name: str) -> np.ndarray | None:
        if name in self._init_protos:
            return numpy_helper.to_array(self._init_protos[name])
        node = self._constants.get(name)
        if node is not None:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def scale(self, qdq: onnx.NodeProto) -> np.ndarray | None:
        return self.constant(qdq.input[1]) if len(qdq.input) > 1 else None

    def op(self, tensor: str) -> str | None:
        p = self.producer.get(tensor)
        return p.op_type if p is not None else None


def conv_macs(view: GraphView, model: Any) -> dict[str, Any]:
    """Conv MACs in total and in Convs reading both inputs through DQs (``qdq_compiler.targets.macs``).

    ``model`` is the IR of ``view``'s proto; shapes are the view's inferred ones, a Conv output left unknown
    is derived from its input shape and attributes.
    """
    from qdq_compiler.targets.macs import layer_macs

    total = int8 = 0
    convs = int8_convs = unknown = 0
    for node in model.graph:
        if node.op_type != "Conv":
            continue
        convs += 1
        macs = layer_macs(node, view.shapes, derive_conv_output=True)
        if macs is None:
            unknown += 1
            continue
        total += macs
        if view.op(node.inputs[0].name) == DEQUANTIZE and view.op(node.inputs[1].name) == DEQUANTIZE:
            int8 += macs
            int8_convs += 1
    return {
        "conv_macs_total": total,
        "conv_macs_int8": int8,
        "conv_macs_int8_pct": 100.0 * int8 / total if total else None,
        "convs": convs,
        "convs_int8": int8_convs,
        "convs_unknown_shape": unknown,
    }


def tensor_scales(view: GraphView, tensor: str, reading: bool) -> list[np.ndarray]:
    """Scales of the Q nodes on `tensor`.

    A tensor an op reads through a DQ (`reading`, producer is a DQ) has the scale of the Q feeding that DQ
    (the DQ's own scale if no Q feeds it): the nearest Q of the DQ->Q chain. Otherwise, the scales of the
    QuantizeLinear nodes reading the tensor.
    """
    p = view.producer.get(tensor)
    if reading and p is not None and p.op_type == DEQUANTIZE:
        q = view.producer.get(p.input[0])
        s = view.scale(q) if q is not None and q.op_type == QUANTIZE else view.scale(p)
        return [s] if s is not None else []
    return [
        s
        for c in view.consumers.get(tensor, [])
        if c.op_type == QUANTIZE
        for s in [view.scale(c)]
        if s is not None
    ]


def _all_equal(scales: list[np.ndarray]) -> bool:
    ref = np.asarray(scales[0], np.float64)
    for s in scales[1:]:
        s = np.asarray(s, np.float64)
        if s.shape != ref.shape or not np.allclose(s, ref, rtol=SCALE_RTOL, atol=0.0):
            return False
    return True


def scale_mismatches(view: GraphView, op_type: str) -> dict[str, Any]:
    checked = mismatched = 0
    examples: list[str] = []
    for node in view.nodes:
        if node.op_type != op_type:
            continue
        data_inputs = list(node.input) if op_type == "Concat" else [node.input[0]]
        scales: list[np.ndarray] = []
        for t in data_inputs:
            if t:
                scales.extend(tensor_scales(view, t, reading=True))
        scales.extend(tensor_scales(view, node.output[0], reading=False))
        if len(scales) < 2:
            continue
        checked += 1
        if not _all_equal(scales):
            mismatched += 1
            if len(examples) < 5:
                flat = sorted({float(np.asarray(s).ravel()[0]) for s in scales})
                examples.append(
                    f"{node.name or node.output[0]}: {len(flat)} scales {flat[0]:.4g}..{flat[-1]:.4g}"
                )
    return {"checked": checked, "mismatched": mismatched, "examples": examples}


def predicted_int8_share(path: Path) -> dict[str, Any]:
    """Cross-check with qdq_compiler.targets.fusion.predict_fusions, if that module works here."""
    try:
        from qdq_compiler.ir import load_model
        from qdq_compiler.targets.fusion import predict_fusions

        report = predict_fusions(load_model(str(path)))
        return {
            "trt_predicted_int8_mac_pct": 100.0 * report.int8_mac_share,
            "trt_predicted_requantizations": len(report.requantizations),
            "trt_predicted_reformats": len(report.reformats),
        }
    except Exception as error:
        return {"trt_predicted_error": f"{type(error).__name__}: {error}"[:300]}


def analyse(path: Path) -> dict[str, Any]:
    from qdq_compiler.ir import load_model

    proto = onnx.load(str(path))
    view = GraphView(proto)
    ops = [n.op_type for n in view.nodes]
    result: dict[str, Any] = {
        "num_q": ops.count(QUANTIZE),
        "num_dq": ops.count(DEQUANTIZE),
        "num_nodes": len(ops),
        "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
    }
    result.update(conv_macs(view, load_model(proto)))
    result["concat"] = scale_mismatches(view, "Concat")
    result["maxpool"] = scale_mismatches(view, "MaxPool")
    result.update(predicted_int8_share(path))
    return result


# ----------------------------------------------------------------------------------------------------
# SQNR against FP32 on held-out inputs (onnxruntime CPU, graph optimizations disabled)
# ----------------------------------------------------------------------------------------------------
def run_model(path: Path, name: str, batches: list[np.ndarray]) -> tuple[list[str], list[list[np.ndarray]]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = [sess.run(None, {name: b}) for b in batches]
    return names, outs


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = float(np.sum((ref - test.astype(np.float64)) ** 2))
    signal_power = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal_power / noise)


def compare_outputs(
    ref_names: list[str], ref: list[list[np.ndarray]], names: list[str], outs: list[list[np.ndarray]]
) -> dict[str, Any]:
    index = {n: i for i, n in enumerate(names)}
    per_output: dict[str, float] = {}
    all_ref, all_q = [], []
    for j, name in enumerate(ref_names):
        k = index.get(name, j)
        r = np.concatenate([o[j].ravel() for o in ref])
        q = np.concatenate([o[k].ravel() for o in outs])
        if r.shape != q.shape:
            per_output[name] = float("nan")
            continue
        per_output[name] = sqnr_db(r, q)
        all_ref.append(r)
        all_q.append(q)
    overall = sqnr_db(np.concatenate(all_ref), np.concatenate(all_q)) if all_ref else float("nan")
    return {"sqnr_db": overall, "sqnr_db_per_output": per_output}


# ----------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------
COLUMNS = [
    "tool",
    "model",
    "wall s",
    "peak RSS MB",
    "#Q",
    "#DQ",
    "Conv MACs INT8 %",
    "Concat mism.",
    "MaxPool mism.",
    "SQNR dB",
    "pred. requant/reformat",
    "notes",
]


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def row_cells(row: dict[str, Any]) -> list[str]:
    if row.get("error"):
        return [row["tool"], row["model"]] + ["—"] * (len(COLUMNS) - 3) + [row["error"]]
    a = row["analysis"]
    sq = row["sqnr"]
    sqnr = _fmt(sq["sqnr_db"], ".2f")
    if len(sq["sqnr_db_per_output"]) > 1:
        sqnr += " (" + ", ".join(f"{k}: {_fmt(v, '.1f')}" for k, v in sq["sqnr_db_per_output"].items()) + ")"
    return [
        row["tool"],
        row["model"],
        _fmt(row["wall_s"], ".1f"),
        _fmt(row["peak_rss_mb"], ".0f"),
        str(a["num_q"]),
        str(a["num_dq"]),
        _fmt(a["conv_macs_int8_pct"], ".1f"),
        f"{a['concat']['mismatched']}/{a['concat']['checked']}",
        f"{a['maxpool']['mismatched']}/{a['maxpool']['checked']}",
        sqnr,
        (
            f"{a['trt_predicted_requantizations']}/{a['trt_predicted_reformats']}"
            if "trt_predicted_requantizations" in a
            else "—"
        ),
        row.get("note", ""),
    ]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    cells = [COLUMNS] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    quick: bool
    calib_samples: int
    eval_samples: int
    timeout_s: float
    variants: list[Variant] = field(default_factory=list)


def environment(modelopt_detail: str, load_before: float) -> dict[str, Any]:
    import onnxruntime

    import qdq_compiler

    return {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU used",
        "load average (1 min) before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}",
        "qdq_compiler": qdq_compiler.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "modelopt": modelopt_detail,
    }


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_model(
    spec: ModelSpec, settings: Settings, work: Path, modelopt: tuple[bool, str, str]
) -> list[dict]:
    folder = work / spec.key
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proto = spec.build()
    fp32 = folder / "fp32.onnx"
    onnx.save(proto, str(fp32))
    name, dims = input_spec(proto)
    batch = dims[0] or 1
    calib = smooth_images(settings.calib_samples * batch, dims[1], dims[2], seed=1234 + spec.resolution)
    held = smooth_images(settings.eval_samples * batch, dims[1], dims[2], seed=987654 + spec.resolution)
    calib_path = folder / "calib.npy"  # samples stacked on axis 0: what ModelOpt reads; the workers split it
    np.save(calib_path, calib)
    eval_batches = split_batches(held, batch)
    ref_names, ref = run_model(fp32, name, eval_batches)
    log(f"[{spec.key}] built, data ready, FP32 reference run in {time.perf_counter() - start:.1f}s")

    rows = []
    usable, mo_detail, mo_python = modelopt
    for variant in settings.variants:
        row: dict[str, Any] = {
            "tool": variant.label,
            "model": spec.label,
            "variant": variant.key,
            "model_key": spec.key,
        }
        out = folder / f"{variant.key}.onnx"
        report = folder / f"{variant.key}.report.json"
        logf = folder / f"{variant.key}.log"
        for stale in (out, report):
            stale.unlink(missing_ok=True)
        if variant.tool == "modelopt":
            if not usable:
                row["error"] = f"not installed here: {mo_detail}"
                rows.append(row)
                continue
            source = folder / f"{variant.key}.input.onnx"  # ModelOpt writes into its input: a copy
            shutil.copyfile(fp32, source)
            mo_args = modelopt_args(source, calib_path, variant.method, out)
            cmd = [
                mo_python,
                str(Path(__file__).resolve()),
                "--worker",
                "modelopt",
                "--report",
                str(report),
                "--modelopt-args",
                json.dumps(mo_args),
            ]
        else:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                variant.tool,
                "--method",
                variant.method,
                "--input",
                str(fp32),
                "--calib",
                str(calib_path),
                "--output",
                str(out),
                "--report",
                str(report),
            ]
        log(f"[{spec.key}] {variant.label} ...")
        run = run_child(cmd, logf, settings.timeout_s)
        row.update(
            {
                "wall_s": run.wall_s,
                "peak_rss_mb": None,
                "returncode": run.returncode,
                "ru_maxrss_wait4_mb": run.maxrss_mb,
                "log": str(logf),
            }
        )
        if report.exists():
            row["worker"] = json.loads(report.read_text())
            row["peak_rss_mb"] = row["worker"].get("peak_rss_mb")
        if run.timed_out:
            row["error"] = f"timed out after {settings.timeout_s:.0f}s"
        elif run.returncode != 0 or not out.exists():
            row["error"] = f"failed (exit {run.returncode}): {log_tail(logf)}"
        if row.get("error"):
            log(f"[{spec.key}] {variant.label}: {row['error']}")
            rows.append(row)
            continue
        row["analysis"] = analyse(out)
        try:
            names, outs = run_model(out, name, eval_batches)
            row["sqnr"] = compare_outputs(ref_names, ref, names, outs)
        except Exception as error:
            row["error"] = (
                f"quantized model does not run in onnxruntime CPU: {type(error).__name__}: {error}"[:300]
            )
            rows.append(row)
            continue
        notes = []
        worker = row.get("worker", {})
        if variant.tool == "ort" and "failed" in worker.get("preprocess", ""):
            notes.append(worker["preprocess"])
        if "trt_predicted_error" in row["analysis"]:
            notes.append(f"predict_fusions failed: {row['analysis']['trt_predicted_error'][:120]}")
        if row["analysis"]["convs_unknown_shape"]:
            notes.append(f"{row['analysis']['convs_unknown_shape']} Conv(s) without shape (MACs not counted)")
        row["note"] = "; ".join(notes)
        log(
            f"[{spec.key}] {variant.label}: {run.wall_s:.1f}s, {_fmt(row['peak_rss_mb'], '.0f')} MB, "
            f"SQNR {row['sqnr']['sqnr_db']:.2f} dB"
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="res 160 models, 8 calibration samples, entropy only"
    )
    parser.add_argument("--models", default="", help="comma-separated model keys (default: all of the mode)")
    parser.add_argument(
        "--variants",
        choices=["primary", "all", "slow"],
        default=None,
        help="entropy only (primary; default with --quick), also max/percentile/minmax (all; "
        "default), or also ORT entropy with 2048 bins (slow)",
    )
    parser.add_argument(
        "--tools", default="qdqc,ort,modelopt", help="comma-separated subset of qdqc,ort,modelopt"
    )
    parser.add_argument("--calib-samples", type=int, default=None, help="default 32 (8 with --quick)")
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per tool run")
    parser.add_argument(
        "--modelopt-python",
        default=os.environ.get("MODELOPT_PYTHON", sys.executable),
        help="interpreter that has nvidia-modelopt (default: $MODELOPT_PYTHON or this one)",
    )
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--keep-models", action="store_true", help="keep the models and calibration data under out-dir/work"
    )
    # worker mode (internal)
    parser.add_argument("--worker", choices=["qdqc", "ort", "modelopt"], help=argparse.SUPPRESS)
    parser.add_argument("--modelopt-args", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--calib", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    variants_mode = args.variants or ("primary" if args.quick else "all")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    chosen = (
        PRIMARY
        + (EXTRA if variants_mode in ("all", "slow") else [])
        + (SLOW if variants_mode == "slow" else [])
    )
    variants = [v for v in chosen if v.tool in tools]
    variants.sort(key=lambda v: (["qdqc", "ort", "modelopt"].index(v.tool), v not in PRIMARY))
    settings = Settings(
        quick=args.quick,
        calib_samples=args.calib_samples or (8 if args.quick else 32),
        eval_samples=args.eval_samples,
        timeout_s=args.timeout,
        variants=variants,
    )
    specs = model_specs(args.quick, [m for m in args.models.split(",") if m])
    out_dir: Path = args.out_dir
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)

    mo_python = shutil.which(args.modelopt_python) or args.modelopt_python
    if "modelopt" in tools:
        usable, detail = probe_modelopt(mo_python)
        if not usable:
            detail += f"; CPU-only install: {MODELOPT_INSTALL_HINT}"
    else:
        usable, detail = False, "not requested"
    log(f"modelopt: {detail}")

    load_before = os.getloadavg()[0]  # other work on the machine inflates wall times
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for spec in specs:
        rows.extend(bench_model(spec, settings, work, (usable, detail, mo_python)))
    total = time.perf_counter() - started

    env = environment(detail if usable else f"unavailable ({detail})", load_before)
    table = markdown_table(rows)
    header = (
        f"PTQ benchmark ({'quick' if args.quick else 'full'}): {settings.calib_samples} calibration samples, "
        f"{settings.eval_samples} held-out samples, smooth random fields in [0,1]; total {total:.0f}s"
    )
    env_line = "; ".join(f"{k} {v}" for k, v in env.items())
    print(header)
    print()
    print(table)
    print()
    print(f"Environment: {env_line}")
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [
        f"# {header}",
        "",
        table,
        "",
        f"Environment: {env_line}",
        "",
        "Columns: see bench/README.md. qdqc pipeline: `" + QDQC_PIPELINE.format(method="METHOD") + "`.",
    ]
    (out_dir / "ptq.md").write_text("\n".join(md) + "\n")
    payload = {
        "settings": asdict(settings) | {"variants": [v.key for v in variants]},
        "models": [asdict(s) for s in specs],
        "environment": env,
        "total_s": total,
        "rows": rows,
    }
    (out_dir / "ptq.json").write_text(json.dumps(payload, indent=1, default=str))
    if not args.keep_models:  # models and calibration arrays (150 MB at r640); logs and reports stay
        for spec in specs:
            for pattern in ("*.onnx", "*.npy", "*.calib.json"):
                for path in (work / spec.key).glob(pattern):
                    path.unlink()
    log(f"wrote {out_dir / 'ptq.md'} and {out_dir / 'ptq.json'} ({total:.0f}s)")


if __name__ == "__main__":
    main()

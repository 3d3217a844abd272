"""qdqc calibration vs onnxruntime: time per sample, peak RSS and amax agreement on YOLOv7-tiny.

Run: ``python bench/bench_calib_vs_ort.py [--resolution 640] [--widths 1.0,0.25]``.

Every measurement runs in its own subprocess (this file re-invoked with ``--worker``), so the peak RSS
(``ru_maxrss``) is per measurement. The prepared model (our ``prepare`` pipeline) is written once per
resolution under ``bench/results/`` and loaded by the workers. Calibration data are deterministic: each
worker first draws 4 ``image_like_batch(1, resolution, seed=k)`` images (untimed); sample ``i`` is image
``i % 4`` rolled by ``i // 4`` pixels along the width and brightened by 2% per round, made one batch at a
time (the little time that takes is measured and reported apart).

Measurements
1. onnxruntime FP32 inference on the prepared model (CPU EP, default options/threads, batch 1), once
   before and once after the calibration runs; the faster of the two is the baseline.
2. qdqc ``collect_statistics`` + ``compute_amax(..., "entropy")`` on every Conv activation input, N samples:
   "one pass" (the default: histograms whose range grows with the data) and "exact" (``exact=True``: two
   passes, absmax then 2048 bins over [0, absmax]). The data are re-iterable and made again on every pass.
3. onnxruntime ``EntropyCalibrater`` (via ``create_calibrator``) on the same tensors and the same 64 samples.
4. amax agreement (smaller resolution, every Conv activation input): qdqc (both modes) vs an independent
   float64 reference written here from docs/tensorrt-qdq.md section 6 on all the data at once (for each mode
   its histogram: grown from the first sample's range, or over [0, absmax]; entropy and mse read the grown
   one re-binned onto [0, absmax], :func:`regrid`), and onnxruntime's MinMax /
   Percentile calibrators vs the same reference.

Results: printed and written to ``bench/results/calib.md`` (+ ``calib.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MARK = "@@RESULT@@"
QMAX = 127
LEVELS = 128


# =========================================================================== helpers (worker side)
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _load(cfg: dict):
    import onnx

    return onnx.load(cfg["model_path"])


_BASES: dict[int, list[np.ndarray]] = {}
N_BASES = 4


def _bases(resolution: int) -> list[np.ndarray]:
    """The base images of a resolution (drawn once per worker, before any timing)."""
    if resolution not in _BASES:
        from qdq_compiler.examples import image_like_batch

        _BASES[resolution] = [image_like_batch(1, resolution, seed=k) for k in range(N_BASES)]
    return _BASES[resolution]


def _sample(index: int, resolution: int) -> np.ndarray:
    """Sample ``index``: a base image rolled and brightened (cheap, deterministic, all different)."""
    rounds = index // N_BASES
    image = np.roll(_bases(resolution)[index % N_BASES], rounds, axis=3) * np.float32(1.0 + 0.02 * rounds)
    return np.minimum(image, np.float32(1.0))


def _restrict_ort_tensors(names: list[str]) -> None:
    """Make onnxruntime's calibrators observe exactly ``names`` (same tensors as qdqc)."""
    from onnxruntime.quantization import calibrate as ortc

    original = ortc.CalibraterBase.select_tensors_to_calibrate
    wanted = set(names)

    def select(self, model):
        tensors, value_infos = original(self, model)
        missing = wanted - tensors
        if missing:
            raise RuntimeError(f"onnxruntime would not calibrate {sorted(missing)[:5]}...")
        return tensors & wanted, value_infos

    ortc.CalibraterBase.select_tensors_to_calibrate = select


class _Reader:
    """onnxruntime CalibrationDataReader generating one sample per call (seed = index)."""

    def __init__(self, input_name: str, count: int, resolution: int, timer: list[float]):
        self.input_name, self.count, self.resolution = input_name, count, resolution
        self.index, self.timer = 0, timer

    def get_next(self):
        if self.index >= self.count:
            return None
        start = time.perf_counter()
        feed = {self.input_name: _sample(self.index, self.resolution)}
        self.timer[0] += time.perf_counter() - start
        self.index += 1
        return feed

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


class _Samples:
    """Re-iterable qdqc calibration data: each iteration regenerates the same samples (time in ``timer``)."""

    def __init__(self, input_name: str, count: int, resolution: int, timer: list[float]):
        self.input_name, self.count, self.resolution, self.timer = input_name, count, resolution, timer

    @property
    def num_samples(self) -> int:
        return self.count

    def __iter__(self):
        for index in range(self.count):
            start = time.perf_counter()
            feed = {self.input_name: _sample(index, self.resolution)}
            self.timer[0] += time.perf_counter() - start
            yield feed


# =========================================================================== workers
def work_infer(cfg: dict) -> dict:
    import onnxruntime as ort

    proto = _load(cfg)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    data = [_sample(i, cfg["resolution"]) for i in range(cfg["count"] + 2)]
    for x in data[:2]:
        session.run(None, {name: x})
    times = []
    for x in data[2:]:
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return {
        "per_sample_s": float(np.mean(times)),
        "median_s": float(np.median(times)),
        "min_s": min(times),
        "peak_rss_mb": _peak_rss_mb(),
    }


def work_qdqc(cfg: dict) -> dict:
    from qdq_compiler.calib import collect_statistics, compute_amax

    proto = _load(cfg)
    name = proto.graph.input[0].name
    gen_time = [0.0]
    data = _Samples(name, cfg["count"], cfg["resolution"], gen_time)
    exact = cfg.get("mode", "one-pass") == "exact"
    _bases(cfg["resolution"])

    rss_before = _rss_mb()
    start = time.perf_counter()
    stats = collect_statistics(proto, cfg["tensors"], data, num_bins=2048, exact=exact)
    collected = time.perf_counter()
    amax = {t: compute_amax(stats[t], "entropy") for t in cfg["tensors"]}
    done = time.perf_counter()
    return {
        **_timings(cfg["count"], start, collected, done, gen_time[0], rss_before),
        "n_tensors": len(amax),
        "binning": sorted({stats[t].binning for t in cfg["tensors"]}),
        "amax": amax,
    }


def _timings(
    count: int, start: float, collected: float, done: float, datagen_s: float, rss_before: float
) -> dict:
    """The timing and memory fields shared by every calibration measurement."""
    return {
        "per_sample_s": (done - start) / count,
        "per_sample_excl_datagen_s": (done - start - datagen_s) / count,
        "collect_s": collected - start,
        "amax_s": done - collected,
        "datagen_s": datagen_s,
        "rss_before_mb": rss_before,
        "peak_rss_mb": _peak_rss_mb(),
    }


def work_ort_entropy(cfg: dict) -> dict:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    _restrict_ort_tensors(cfg["tensors"])
    proto = _load(cfg)
    name = proto.graph.input[0].name
    del proto
    gen_time = [0.0]
    _bases(cfg["resolution"])
    with tempfile.TemporaryDirectory(prefix="bench-ort-") as tmp:
        calibrator = create_calibrator(
            cfg["model_path"],
            op_types_to_calibrate=["Conv"],
            augmented_model_path=os.path.join(tmp, "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            extra_options={"symmetric": True, "num_bins": cfg["num_bins"], "num_quantized_bins": 128},
        )
        n_tensors = len(calibrator.tensors_to_calibrate)
        rss_before = _rss_mb()
        start = time.perf_counter()
        calibrator.collect_data(_Reader(name, cfg["count"], cfg["resolution"], gen_time))
        collected = time.perf_counter()
        ranges = calibrator.compute_data()
        done = time.perf_counter()
    amax = {
        t: float(np.max(np.abs(np.concatenate([np.ravel(v) for v in ranges[t].range_value]))))
        for t in cfg["tensors"]
    }
    return {
        **_timings(cfg["count"], start, collected, done, gen_time[0], rss_before),
        "n_tensors": n_tensors,
        "amax": amax,
    }


# --------------------------------------------------------------------------- reference (float64)
def ref_entropy_hist(hist: np.ndarray, width: float, bin0_trick: bool = True) -> float:
    """Section-6 KL threshold on a |x| histogram; amax = upper edge of bin i (last minimum wins).

    ``bin0_trick``: bin 0 takes bin 1's count first, as pytorch-quantization's ``_compute_amax_entropy`` does
    (and qdqc); without it, the zeros of ReLU outputs weigh in the divergence.
    """
    h = np.asarray(hist, dtype=np.float64).copy()
    if bin0_trick:
        h[0] = h[1]
    n = h.size
    best, best_i = np.inf, None
    for i in range(LEVELS, n + 1):
        p = h[:i].copy()
        p[i - 1] += h[i:].sum()
        kept = h[:i]
        level = (np.arange(i) * LEVELS) // i
        nonzero = kept > 0
        level_sum = np.bincount(level, weights=kept, minlength=LEVELS)
        level_nz = np.bincount(level, weights=nonzero.astype(np.float64), minlength=LEVELS)
        q = np.where(nonzero, level_sum[level] / np.maximum(level_nz[level], 1.0), 0.0)
        if q.sum() == 0:
            continue
        pn, qn = p / p.sum(), q / q.sum()
        m = pn > 0
        kl = np.inf if np.any(qn[m] == 0) else float(np.sum(pn[m] * np.log(pn[m] / qn[m])))
        if kl <= best:  # last minimum wins
            best, best_i = kl, i
    return np.nan if best_i is None else best_i * width


def ref_mse_hist(hist: np.ndarray, width: float, start_bin: int = LEVELS) -> float:
    """The bin centre from ``start_bin`` on minimising sum(count * (fq(c) - c)^2); the first minimum wins."""
    counts = np.asarray(hist, dtype=np.float64)
    centers = (np.arange(counts.size) + 0.5) * width
    occ = counts > 0
    c, w = centers[occ], counts[occ]
    candidates = centers[start_bin:]
    errors = np.empty(candidates.size)
    for s in range(0, candidates.size, 256):
        amax = candidates[s : s + 256, None]
        scale = amax / QMAX
        fq = np.clip(np.round(c[None, :] / scale), -QMAX, QMAX) * scale
        errors[s : s + 256] = ((fq - c[None, :]) ** 2) @ w
    return float(candidates[int(np.argmin(errors))])


def grown_hist(
    absx: np.ndarray, first: float, bins: int = 2048, max_bins: int = 32 * 2048
) -> tuple[np.ndarray, float]:
    """The one-pass histogram from all |x| at once: ``base`` bins over [0, first] (``first`` = the first
    batch's absmax, closing bin base - 1), then bins of the same width up to the one holding absmax; ``base``
    halves while more than ``max_bins`` bins would be needed."""
    absmax = float(absx.max())
    base = bins
    while True:
        n = base if absmax <= first else int(np.floor(absmax * base / first)) + 1
        if n <= max_bins:
            break
        base //= 2
    low, _ = np.histogram(absx[absx <= first], bins=base, range=(0.0, first))
    high, _ = np.histogram(absx[absx > first], bins=first * np.arange(base, n + 1, dtype=np.float64) / base)
    return np.concatenate([low, high]), first / base


def regrid(grown: np.ndarray, width: float, first: float, absmax: float, bins: int = 2048) -> np.ndarray:
    """The grown histogram as entropy and mse read it: 2048 bins over [0, absmax] (docs/calibration-cache.md).

    Counts spread evenly inside each grown bin (the last one ends at absmax), the cumulative count read at
    the exact edges by linear interpolation and rounded; the values at absmax and at ``first`` (kept in bin
    base - 1 by the grown histogram) are placed exactly.
    """
    counts = grown.astype(np.float64)
    counts = counts[: int(np.flatnonzero(counts)[-1]) + 1]
    counts[-1] -= 1
    points = [absmax]
    base = round(first / width)
    if first < absmax and base - 1 < counts.size - 1 and counts[base - 1] >= 1:
        counts[base - 1] -= 1
        points.append(first)
    grown_edges = np.minimum(np.arange(counts.size + 1) * width, absmax)
    cumulative = np.interp(
        np.arange(bins + 1) * (absmax / bins), grown_edges, np.concatenate(([0.0], np.cumsum(counts)))
    )
    hist = np.diff(np.floor(cumulative + 0.5).astype(np.int64))
    for point in points:
        hist[min(int(point * bins / absmax), bins - 1)] += 1
    return hist


def reference_value_amax(absx: np.ndarray) -> dict[str, float]:
    """Reference amax of the methods that read the values themselves (the same for both modes)."""
    rank = int(np.ceil(round(0.9999 * absx.size, 6)))  # nearest rank
    return {
        "max": float(absx.max()),
        "percentile{p=99.99}": float(np.partition(absx, rank - 1)[rank - 1]),
        "percentile{p=99.99} [linear-interp ref]": float(np.percentile(absx, 99.99)),
    }


def reference_hist_amax(hist: np.ndarray, width: float, absmax: float) -> dict[str, float]:
    """Reference amax of the histogram methods (+ an informative variant, key with a space) on ``hist``."""
    return {
        "entropy": min(ref_entropy_hist(hist, width), absmax),
        "entropy [ref without bin0:=bin1]": min(ref_entropy_hist(hist, width, bin0_trick=False), absmax),
        "mse": min(ref_mse_hist(hist, width), absmax),
    }


MODES = {"one-pass": False, "exact": True}  # qdqc calibration mode -> collect_statistics(exact=...)


def work_agree(cfg: dict) -> dict:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from qdq_compiler.calib import collect_statistics, compute_amax

    proto = _load(cfg)
    name = proto.graph.input[0].name
    tensors, n, res = cfg["tensors"], cfg["count"], cfg["resolution"]
    methods = ["max", "percentile{p=99.99}", "entropy", "mse"]

    qdqc: dict[str, dict[str, dict[str, float]]] = {}
    hists: dict[str, dict[str, np.ndarray]] = {}
    for mode, exact in MODES.items():
        stats = collect_statistics(proto, tensors, _Samples(name, n, res, [0.0]), num_bins=2048, exact=exact)
        qdqc[mode] = {t: {m: compute_amax(stats[t], m) for m in methods} for t in tensors}
        hists[mode] = {t: stats[t].hist for t in tensors}

    # raw values from an unoptimised one-thread session of our own (qdqc's sessions run one thread each and
    # give the same bits; onnxruntime's Conv results change in the last bits with the thread count)
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    for t in tensors:
        if t != name:
            work.graph.output.append(onnx.ValueInfoProto(name=t))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(work.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    fetch = [t for t in tensors if t != name]
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for i in range(n):
        x = _sample(i, res)
        outs = dict(zip(fetch, session.run(fetch, {name: x}), strict=True))
        for t in tensors:
            v = x if t == name else outs[t]
            chunks[t].append(np.abs(v.astype(np.float32)).ravel())
    ref: dict[str, dict[str, dict[str, float]]] = {mode: {} for mode in MODES}
    hist_diff: dict[str, dict[str, int]] = {mode: {} for mode in MODES}
    one_pass_width: dict[str, float] = {}
    for t in tensors:
        first = float(chunks[t][0].max())
        absx = np.concatenate(chunks[t]).astype(np.float64)
        chunks[t] = []
        absmax = float(absx.max())
        final, _ = np.histogram(absx, bins=2048, range=(0.0, absmax))
        grown, one_pass_width[t] = grown_hist(absx, first)
        pairs = {"one-pass": (grown, one_pass_width[t]), "exact": (final, absmax / 2048)}
        by_value = reference_value_amax(absx)
        regridded = regrid(grown, one_pass_width[t], first, absmax) if absmax > first else grown
        read = {
            "one-pass": (regridded, absmax / 2048 if absmax > first else one_pass_width[t]),
            "exact": pairs["exact"],
        }
        for mode, (hist, _) in pairs.items():
            ref[mode][t] = {**by_value, **reference_hist_amax(*read[mode], absmax)}
            got = hists[mode][t]
            hist_diff[mode][t] = (
                int(np.abs(hist - got).max()) if got.size == hist.size else f"{got.size} bins vs {hist.size}"
            )

    # onnxruntime MinMax (symmetric) and Percentile (99.99, symmetric)
    _restrict_ort_tensors(tensors)
    ort_amax: dict[str, dict[str, float]] = {t: {} for t in tensors}
    with tempfile.TemporaryDirectory(prefix="bench-ort-") as tmp:
        for method, key, extra in (
            (CalibrationMethod.MinMax, "max", {"symmetric": True}),
            (
                CalibrationMethod.Percentile,
                "percentile{p=99.99}",
                {"symmetric": True, "percentile": 99.99, "num_bins": 2048},
            ),
        ):
            calibrator = create_calibrator(
                cfg["model_path"],
                op_types_to_calibrate=["Conv"],
                augmented_model_path=os.path.join(tmp, f"aug-{key[:3]}.onnx"),
                calibrate_method=method,
                extra_options=extra,
            )
            calibrator.collect_data(_Reader(name, n, res, [0.0]))
            data = calibrator.compute_data()
            for t in tensors:
                lo, hi = data[t].range_value
                ort_amax[t][key] = float(np.max(np.abs(np.concatenate([np.ravel(lo), np.ravel(hi)]))))
    return {
        "qdqc": qdqc,
        "ref": ref,
        "ort": ort_amax,
        "hist_max_count_diff": hist_diff,
        "one_pass_width": one_pass_width,
    }


# =========================================================================== driver
def work_prepare(cfg: dict) -> dict:
    """Build + prepare YOLOv7-tiny once; save it; return path, sorted Conv activation inputs, Conv order."""
    path, tensors = prepare_model(cfg["resolution"], cfg["width"])
    import onnxruntime

    return {"model_path": path, "tensors": tensors, "order": conv_order(path), "ort": onnxruntime.__version__}


def prepare_model(resolution: int, width: float) -> tuple[str, list[str]]:
    import onnx

    from qdq_compiler.ir import load_model, to_proto
    from qdq_compiler.models import build_yolov7_tiny
    from qdq_compiler.pm import PassContext, PassManager

    proto = build_yolov7_tiny(width=width, resolution=resolution)
    m = load_model(proto)
    PassManager("prepare").run(m, PassContext())
    prepared = to_proto(m)
    tensors = sorted({node.input[0] for node in prepared.graph.node if node.op_type == "Conv"})
    path = RESULTS / f"yolov7tiny_w{width}_r{resolution}.prepared.onnx"
    onnx.save(prepared, str(path))
    return str(path), tensors


def conv_order(path: str) -> list[str]:
    import onnx

    model = onnx.load(path)
    seen: list[str] = []
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[0] not in seen:
            seen.append(node.input[0])
    return seen


def run_worker(kind: str, cfg: dict, timeout: float = 1200) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=RESULTS) as cfg_file:
        json.dump(cfg, cfg_file)
    label = f"{kind} { ({k: v for k, v in cfg.items() if k not in ('tensors', 'model_path')}) }"
    print(f"  running {label} ...", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", kind, cfg_file.name],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        print(f"    TIMEOUT after {timeout:.0f}s", flush=True)
        return {"error": f"timeout {timeout:.0f}s"}
    finally:
        os.unlink(cfg_file.name)
    wall = time.perf_counter() - start
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK) :])
            result["wall_s"] = wall
            print(f"    done in {wall:.1f}s", flush=True)
            return result
    print(f"    FAILED (rc={proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
    return {"error": proc.stderr[-2000:]}


def _fmt_ms(s: float) -> str:
    return f"{s * 1e3:8.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=640)
    ap.add_argument(
        "--widths",
        default="1.0,0.25",
        help="channel widths of the performance runs (1.0 = YOLOv7-tiny's own channel counts)",
    )
    ap.add_argument(
        "--qdqc-samples", default="32,64,512", help="sample counts of the default (one-pass) runs"
    )
    ap.add_argument("--qdqc-exact-samples", default="64", help="sample counts of the exact (2-pass) runs")
    ap.add_argument("--ort-samples", type=int, default=64)
    ap.add_argument(
        "--ort-bins", default="2048,128", help="EntropyCalibrater num_bins values (128 = ORT default)"
    )
    ap.add_argument("--agree-resolution", type=int, default=160)
    ap.add_argument("--agree-samples", type=int, default=32)
    ap.add_argument("--agree-width", type=float, default=0.25)
    ap.add_argument("--skip-agree", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    load_start = os.getloadavg()
    out: dict = {
        "args": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_start": load_start},
    }
    # The driver imports nothing heavy (no onnx/onnxruntime/qdq_compiler): on Linux a child's ru_maxrss
    # starts from its parent's high-water mark, so the parent must stay small. Model building is a worker.
    ort_version = ["?"]

    lines: list[str] = []

    def emit(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    def sample_counts(text: str) -> list[int]:
        return [int(n) for n in text.split(",") if n.strip()]

    def perf_section(
        res: int, width: float, one_pass_ns: list[int], exact_ns: list[int], ort_bins: list[int]
    ) -> dict:
        prep = run_worker("prepare", {"resolution": res, "width": width})
        path, tensors = prep["model_path"], prep["tensors"]
        ort_version[0] = prep["ort"]
        base = {"model_path": path, "tensors": tensors, "resolution": res}
        sec: dict = {"n_tensors": len(tensors), "prepare_peak_rss_mb": prep["peak_rss_mb"]}
        print(f"[res {res}] prepared model {path}: {len(tensors)} Conv activation inputs", flush=True)
        sec["infer"] = run_worker("infer", {**base, "count": 16})
        sec["qdqc"] = {n: run_worker("qdqc", {**base, "count": n, "mode": "one-pass"}) for n in one_pass_ns}
        sec["qdqc_exact"] = {n: run_worker("qdqc", {**base, "count": n, "mode": "exact"}) for n in exact_ns}
        sec["ort"] = {
            b: run_worker("ort_entropy", {**base, "count": args.ort_samples, "num_bins": b}) for b in ort_bins
        }
        # the machine is shared: measure the inference baseline again at the end and keep the faster run
        # (the smaller baseline makes the "<= 2x inference" ratio the harder one to meet)
        again = run_worker("infer", {**base, "count": 16})
        if "error" not in sec["infer"] and "error" not in again:
            sec["infer_runs"] = [sec["infer"], again]
            faster = min(sec["infer"]["per_sample_s"], again["per_sample_s"])
            sec["infer"] = {
                **sec["infer"],
                "per_sample_s": faster,
                "peak_rss_mb": max(sec["infer"]["peak_rss_mb"], again["peak_rss_mb"]),
            }
        sec["loadavg"] = os.getloadavg()
        return sec

    def report_perf(res: int, width: float, sec: dict) -> None:
        inf = sec["infer"]
        emit(
            f"### Performance: YOLOv7-tiny width={width} resolution={res}, {sec['n_tensors']} Conv "
            f"activation inputs, batch 1, {os.cpu_count()} CPUs, onnxruntime {ort_version[0]}; "
            f"driver RSS {_rss_mb():.0f} MB"
        )
        runs = sec.get("infer_runs", [])
        emit(
            "ORT inference runs (mean / median / min ms per sample): "
            + "; ".join(
                f"{r['per_sample_s'] * 1e3:.1f} / {r['median_s'] * 1e3:.1f} / {r['min_s'] * 1e3:.1f}"
                for r in runs
            )
            + " -> baseline = the faster run's mean."
            + f" 1-min load average at start / end: {load_start[0]:.2f} / "
            f"{sec.get('loadavg', ('?',))[0]:.2f} (shared machine: timings are noisy)"
        )
        emit("")
        emit(
            "| measurement | N | ms/sample | ms/sample excl. datagen | collect s | amax s | RSS before MB "
            "| peak RSS MB |"
        )
        emit("|---|---:|---:|---:|---:|---:|---:|---:|")
        if "error" not in inf:
            emit(
                f"| ORT FP32 inference (default opts) | 16 | {_fmt_ms(inf['per_sample_s'])} | - | - | - | - "
                f"| {inf['peak_rss_mb']:.0f} |"
            )
        for label, runs in (
            ("qdqc one pass (default) + entropy", sec["qdqc"]),
            ("qdqc exact (2 passes) + entropy", sec["qdqc_exact"]),
            *((f"ORT EntropyCalibrater num_bins={b}", {args.ort_samples: r}) for b, r in sec["ort"].items()),
        ):
            for n, r in runs.items():
                if "error" in r:
                    emit(
                        f"| {label} | {n} | ERROR: {r['error'].splitlines()[-1][:80] if r['error'] else ''} "
                        "| | | | | |"
                    )
                    continue
                emit(
                    f"| {label} | {n} | {_fmt_ms(r['per_sample_s'])} "
                    f"| {_fmt_ms(r['per_sample_excl_datagen_s'])} | {r['collect_s']:.1f} "
                    f"| {r['amax_s']:.2f} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
                )
        emit("")
        emit("| ratio | value | target | verdict |")
        emit("|---|---:|---:|---|")

        def ratio(label, num, den, target, ok):
            if num is None or den is None:
                emit(f"| {label} | n/a | {target} | n/a |")
                return
            value = num / den
            emit(f"| {label} | {value:.2f}x | {target} | {'OK' if ok(value) else 'MISS'} |")

        def get(r, key):
            return None if r is None or "error" in r else r[key]

        inf_t = get(inf, "per_sample_s")
        for mode, runs in (("one pass", sec["qdqc"]), ("exact", sec["qdqc_exact"])):
            for n, r in runs.items():
                ratio(
                    f"qdqc {mode} time/sample (N={n}) / ORT inference time/sample",
                    get(r, "per_sample_s"),
                    inf_t,
                    "<= 2x",
                    lambda v: v <= 2,
                )
                ratio(
                    "  same, excluding image_like_batch time (inference baseline has none)",
                    get(r, "per_sample_excl_datagen_s"),
                    inf_t,
                    "<= 2x",
                    lambda v: v <= 2,
                )
        n_ort = args.ort_samples
        for b, r in sec["ort"].items():
            for mode, runs in (("one pass", sec["qdqc"]), ("exact", sec["qdqc_exact"])):
                q = runs.get(n_ort)
                if q is None:
                    continue
                ratio(
                    f"ORT entropy (bins={b}) time / qdqc {mode} time (N={n_ort})",
                    get(r, "per_sample_s"),
                    get(q, "per_sample_s"),
                    ">= 3x",
                    lambda v: v >= 3,
                )
                ratio(
                    "  same, excluding image_like_batch time",
                    get(r, "per_sample_excl_datagen_s"),
                    get(q, "per_sample_excl_datagen_s"),
                    ">= 3x",
                    lambda v: v >= 3,
                )
            q = sec["qdqc"].get(n_ort)
            ratio(
                f"ORT entropy (bins={b}) peak RSS / qdqc one pass peak RSS (N={n_ort})",
                get(r, "peak_rss_mb"),
                get(q, "peak_rss_mb"),
                ">= 10x",
                lambda v: v >= 10,
            )
            rb, qb = get(r, "rss_before_mb"), get(q, "rss_before_mb")
            if rb is not None and qb is not None:
                ratio(
                    "  same, above the pre-calibration RSS (informative)",
                    get(r, "peak_rss_mb") - rb,
                    get(q, "peak_rss_mb") - qb,
                    ">= 10x",
                    lambda v: v >= 10,
                )
        for mode, runs in (("one pass", sec["qdqc"]), ("exact", sec["qdqc_exact"])):
            ns = sorted(runs)
            if len(ns) > 1:
                ratio(
                    f"qdqc {mode} peak RSS N={ns[-1]} / N={ns[0]}",
                    get(runs[ns[-1]], "peak_rss_mb"),
                    get(runs[ns[0]], "peak_rss_mb"),
                    "<= 1.3x",
                    lambda v: v <= 1.3,
                )
        # entropy amax: qdqc vs ORT (different algorithms; informative)
        qa = get(sec["qdqc"].get(n_ort), "amax")
        for b, r in sec["ort"].items():
            oa = get(r, "amax")
            if qa and oa:
                rel = np.array([oa[t] / qa[t] for t in qa])
                emit(
                    f"| ORT entropy (bins={b}) amax / qdqc entropy amax, median [min, max] over tensors "
                    f"| {np.median(rel):.2f} [{rel.min():.2f}, {rel.max():.2f}] | info | - |"
                )
        emit("")

    widths = [float(w) for w in args.widths.split(",") if w.strip()]
    perf = {
        width: perf_section(
            args.resolution,
            width,
            sample_counts(args.qdqc_samples),
            sample_counts(args.qdqc_exact_samples),
            sample_counts(args.ort_bins),
        )
        for width in widths
    }
    out["perf"] = {f"r{args.resolution}_w{width}": sec for width, sec in perf.items()}

    agree = None
    if not args.skip_agree:
        prep = run_worker("prepare", {"resolution": args.agree_resolution, "width": args.agree_width})
        order = prep["order"]
        print(f"[agree] resolution {args.agree_resolution}, {len(order)} Conv activation inputs", flush=True)
        agree = run_worker(
            "agree",
            {
                "model_path": prep["model_path"],
                "tensors": order,
                "resolution": args.agree_resolution,
                "count": args.agree_samples,
            },
        )
        out["agree"] = agree
        out["agree_shown"] = [order[int(round(k))] for k in np.linspace(0, len(order) - 1, 6)]

    emit(f"## qdqc calibration vs onnxruntime ({time.strftime('%Y-%m-%d %H:%M')})")
    emit("")
    for width, sec in perf.items():
        report_perf(args.resolution, width, sec)
    if agree is not None and "error" not in agree:
        report_agree(agree, out["agree_shown"], args, emit)
    elif agree is not None:
        emit(f"amax agreement FAILED: {agree['error'][-500:]}")
    emit(f"total bench wall time: {time.perf_counter() - t_all:.0f}s")

    out["machine"]["onnxruntime"] = ort_version[0]
    (RESULTS / "calib.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "calib.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {RESULTS / 'calib.md'}")


def report_agree(agree: dict, shown: list[str], args: argparse.Namespace, emit) -> None:
    """Agreement with the float64 reference, in reference bins; '!' = over one bin."""
    ref, qdqc, ort_amax = agree["ref"], agree["qdqc"], agree["ort"]
    tensors = list(ref["exact"])
    methods = list(next(iter(ref["exact"].values())))
    # bin width of each mode's reference histogram: first-sample absmax / 2048 (one pass), absmax / 2048
    width = {
        "exact": {t: ref["exact"][t]["max"] / 2048 for t in tensors},
        "one-pass": {t: agree["one_pass_width"][t] for t in tensors},
    }

    def delta(value, t, m, mode):
        return abs(value - ref[mode][t][m]) / width[mode][t]

    emit(
        f"### amax agreement: width {args.agree_width}, resolution {args.agree_resolution}, "
        f"{args.agree_samples} samples, all {len(tensors)} Conv activation inputs (Δ = |amax - ref| in bins "
        "of that reference's histogram)"
    )
    emit("")
    emit(
        " ".join(
            [
                "ref = float64 reference from docs section 6 on all |x| at once.",
                "Its histogram, per qdqc mode: one pass (the default) = 2048 bins over",
                "[0, first sample's absmax], then bins of the same width up to the overall absmax;",
                "exact (2 passes) = 2048 bins over [0, absmax]. Entropy with 128 levels from bin 128,",
                "bin 0 := bin 1 (pytorch-quantization), last minimum on ties; mse over bin centres",
                "from bin 128, first minimum; percentile = nearest rank; max = absmax. Rows in brackets are",
                "informative variants of the reference (not qdqc's definition). ORT = MinMax (symmetric) /",
                "Percentile (99.99, symmetric, 2048 bins), against the exact-mode reference.",
                "'one pass vs exact ref' compares the one-pass amax with the exact-mode reference:",
                "how far apart the two histogram definitions lead (informative).",
            ]
        )
    )
    emit("")
    emit("Maximum Δ over all tensors:")
    emit("")
    emit(
        "| method | qdqc one pass | tensors > 1 bin | qdqc exact | tensors > 1 bin | ORT | tensors > 1 bin "
        "| one pass vs exact ref | tensors > 1 bin |"
    )
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in methods:
        base = m.split(" ")[0]
        cells = [m]
        for source, mode in (
            (qdqc["one-pass"], "one-pass"),
            (qdqc["exact"], "exact"),
            (None if " " in m else ort_amax, "exact"),
            (qdqc["one-pass"], "exact"),
        ):
            values = (
                []
                if source is None
                else [delta(source[t][base], t, m, mode) for t in tensors if base in source[t]]
            )
            if not values:
                cells += ["-", "-"]
                continue
            cells += [f"{max(values):.2f}", str(sum(v > 1 for v in values))]
        emit("| " + " | ".join(cells) + " |")
    emit("")
    for mode, diffs in agree["hist_max_count_diff"].items():
        equal = sum(d == 0 for d in diffs.values())
        worst = max((d for d in diffs.values() if isinstance(d, int)), default=0)
        emit(
            f"qdqc {mode} histograms equal to the reference's, count for count: {equal} of {len(diffs)} "
            f"tensors (largest count difference {worst})."
        )
    emit("")
    emit("Per tensor (a spread of 6):")
    emit("")
    emit("| tensor | method | ref one pass | qdqc one pass | Δ | ref exact | qdqc exact | Δ | ORT | Δ |")
    emit("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in shown:
        for m in methods:
            base = m.split(" ")[0]
            cells = [t, m]
            for source, mode, with_ref in (
                (qdqc["one-pass"][t], "one-pass", True),
                (qdqc["exact"][t], "exact", True),
                (None if " " in m else ort_amax[t], "exact", False),
            ):
                if with_ref:
                    cells.append(f"{ref[mode][t][m]:.5g}")
                if source is None or base not in source:
                    cells += ["-", "-"]
                    continue
                d = delta(source[base], t, m, mode)
                cells += [f"{source[base]:.5g}", f"{d:.2f}{'!' if d > 1 and ' ' not in m else ''}"]
            emit("| " + " | ".join(cells) + " |")
    emit("")


WORKERS = {
    "prepare": work_prepare,
    "infer": work_infer,
    "qdqc": work_qdqc,
    "ort_entropy": work_ort_entropy,
    "agree": work_agree,
}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        with open(sys.argv[3]) as fh:
            config = json.load(fh)
        result = WORKERS[sys.argv[2]](config)
        result.setdefault("peak_rss_mb", _peak_rss_mb())
        print(MARK + json.dumps(result, default=float), flush=True)
    else:
        main()

"""One-pass vs two-pass (exact) calibration on any model: bins off, SQNR, calibration time (issue 15, 3).

Run: ``python bench/bench_onepass.py MODEL.onnx CALIB [--eval DATA] [--methods mse,entropy]``, e.g. with
``qdq_compiler/data/detector/detector.onnx qdq_compiler/data/detector/calib --eval .../val``.

For each calibration mode (``one pass``: histograms whose range grows with the data; ``exact``:
``calibrate{exact=true}``, two passes over the data) the ``trt-int8`` pipeline runs once on the data (its
statistics are kept) and once from those statistics: the difference of the two wall times is the
calibration's. Then, per method:

* **bins off**: per calibrated tensor, ``|amax(one pass) - amax(exact)|`` in bins of the exact histogram
  (``absmax / 2048``); the table counts the tensors more than one bin off and gives the largest distance.
* **worst excess**: the one-pass amax scored by the method's own objective on the exact histogram (squared
  error for mse, KL divergence for entropy), relative to the exact amax's score: how much worse the
  one-pass choice is by the measure both minimise (0 when the same bin is chosen), largest over tensors;
  an entropy threshold whose last kept exact bin is empty while values lie above it has an infinite KL
  and is counted apart.
* **SQNR**: the model compiled from each mode's statistics, against the float model in onnxruntime on the
  ``--eval`` data (default: the calibration data), all outputs concatenated.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.calib import open_calibration_data
from qdq_compiler.calib.histogram import DEFAULT_NUM_BINS, TensorStats
from qdq_compiler.calib.methods import compute_amax, entropy_divergences, mse_error_sums
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager

MODES = {"one pass": False, "exact": True}


def _compile(model_path: Path, method: str, stats: dict[str, TensorStats], calib: str) -> onnx.ModelProto:
    """trt-int8 from the statistics; the data serve only equalize-channels' per-channel ranges."""
    model = load_model(model_path)
    context = PassContext(calibration_stats=dict(stats), calibration_data=calib)
    PassManager(f"trt-int8{{method={method}}}").run(model, context)
    return to_proto(model)


def collect(model_path: Path, calib: str, exact: bool, repeat: int) -> tuple[dict[str, TensorStats], float]:
    """Statistics of one mode and the seconds their collection took: the pipeline with data minus the
    pipeline from the statistics, the fastest of ``repeat`` runs each."""
    pipeline = f"trt-int8{{method=max,two-pass={'true' if exact else 'false'}}}"
    with_data = from_stats = float("inf")
    for _ in range(repeat):
        model = load_model(model_path)
        ctx = PassContext(calibration_data=calib)
        start = time.perf_counter()
        PassManager(pipeline).run(model, ctx)
        with_data = min(with_data, time.perf_counter() - start)
        stats = dict(ctx.calibration_stats)
        start = time.perf_counter()
        _compile(model_path, "max", stats, calib)
        from_stats = min(from_stats, time.perf_counter() - start)
    return stats, with_data - from_stats


def exact_objective(stats: TensorStats, method: str, amax: float) -> float:
    """The method's own objective on the exact histogram at ``amax`` (mse: squared error, entropy: KL)."""
    counts = stats.calibration_histogram()
    used = int(np.flatnonzero(counts)[-1]) + 1
    width = stats.hist_width
    if method == "mse":
        sums = mse_error_sums(counts[:used], 128, 1, prune=False)
        index = int(np.clip(round(amax / width - 0.5) - 128, 0, sums.candidates.size - 1))
        return float(sums.exact(index))
    thresholds, divergence = entropy_divergences(counts[:used], 128, 1)
    index = int(np.clip(round(amax / width) - 128, 0, thresholds.size - 1))
    return float(divergence[index])


def compare(
    one_pass: dict[str, TensorStats], exact: dict[str, TensorStats], method: str
) -> tuple[list, list]:
    """Per tensor: distance in exact bins, and the relative excess of the exact histogram's objective."""
    distances, excess = [], []
    for name in sorted(set(one_pass) & set(exact)):
        reference = exact[name]
        if reference.absmax == 0.0 or int(np.count_nonzero(reference.hist)) < 2:
            continue
        width = reference.absmax / DEFAULT_NUM_BINS
        ours, theirs = compute_amax(one_pass[name], method), compute_amax(reference, method)
        distances.append(abs(ours - theirs) / width)
        if reference.hist_width > 0 and np.flatnonzero(reference.hist)[-1] >= 128:
            best = exact_objective(reference, method, theirs)
            excess.append((exact_objective(reference, method, ours) - best) / best if best > 0 else 0.0)
    return distances, excess


def _excess_cell(excess: list[float]) -> str:
    finite = [value for value in excess if np.isfinite(value)]
    cell = f"{100 * max(finite, default=0.0):.3f}%"
    infinite = len(excess) - len(finite)
    return cell + (f" ({infinite} at an infinite KL)" if infinite else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("calib")
    parser.add_argument("--eval", dest="eval_data", help="SQNR data (default: the calibration data)")
    parser.add_argument("--methods", default="mse,entropy")
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode for the calibration time")
    args = parser.parse_args()
    methods = args.methods.split(",")
    float_proto = onnx.load(args.model)
    eval_batches = list(open_calibration_data(args.eval_data or args.calib, float_proto))
    reference = run_outputs(float_proto, eval_batches)

    stats, seconds = {}, {}
    for mode, exact in MODES.items():
        stats[mode], seconds[mode] = collect(args.model, args.calib, exact, args.repeat)
    print(f"model {args.model}, {len(stats['exact'])} calibrated tensors, {len(eval_batches)} eval batches")
    print("calibration seconds: " + ", ".join(f"{mode} {seconds[mode]:.2f}" for mode in MODES))
    print(
        "| method | tensors > 1 bin off | largest (bins) | median (bins) | worst excess "
        "| SQNR one pass dB | SQNR exact dB |"
    )
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        found, excess = compare(stats["one pass"], stats["exact"], method)
        distances = np.array(found)
        sqnr = {}
        for mode in MODES:
            compiled = _compile(args.model, method, stats[mode], args.calib)
            outputs = run_outputs(compiled, eval_batches)
            joined = [np.concatenate([reference[n].ravel() for n in sorted(reference)])]
            joined.append(np.concatenate([outputs[n].ravel() for n in sorted(reference)]))
            sqnr[mode] = sqnr_db(joined[0], joined[1])
        print(
            f"| {method} | {int(np.sum(distances > 1.0))} of {distances.size} | {distances.max():.1f} | "
            f"{np.median(distances):.2f} | {_excess_cell(excess)} | {sqnr['one pass']:.2f} | "
            f"{sqnr['exact']:.2f} |"
        )


if __name__ == "__main__":
    main()

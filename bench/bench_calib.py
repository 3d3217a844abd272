"""Benchmark the calibration engine: histogram streaming, amax methods, and collection over a small CNN.

Run: ``python bench/bench_calib.py [--samples 64] [--size 320]``. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

from qdq_compiler.calib.collect import collect_statistics
from qdq_compiler.calib.data import IterableData
from qdq_compiler.calib.histogram import TensorStats, collect_exact
from qdq_compiler.calib.methods import compute_amax
from qdq_compiler.calib.weights import per_channel_amax


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_histogram() -> None:
    rng = np.random.default_rng(0)
    activation = (rng.standard_normal((1, 64, 160, 160)) * 3).astype(np.float32)
    stats = TensorStats()
    seconds = _timed(lambda: stats.update(activation))
    print(
        f"TensorStats.update  {activation.size / 1e6:.1f} M floats: {seconds * 1e3:7.1f} ms "
        f"({activation.nbytes / seconds / 1e9:.2f} GB/s)"
    )
    for method in ("max", "percentile", "entropy", "mse"):
        seconds = _timed(lambda m=method: compute_amax(stats, m))
        print(f"compute_amax {method:<10s} (2048 bins): {seconds * 1e3:7.2f} ms")
    weight = rng.standard_normal((256, 128, 3, 3)).astype(np.float32)
    for method in ("max", "percentile", "mse"):
        seconds = _timed(lambda m=method: per_channel_amax(weight, 0, m), repeat=1)
        print(f"per_channel_amax {method:<10s} [256,128,3,3]: {seconds * 1e3:8.1f} ms")


def _amax_inputs() -> dict[str, TensorStats]:
    """Statistics shaped like the pipeline's: 2048-bin histograms of 4k and 1M values (one pass and two)."""
    rng = np.random.default_rng(3)
    small = rng.standard_normal(4096).astype(np.float32)
    large = np.maximum(rng.standard_normal(1_000_000) + 0.3, 0).astype(np.float32)
    one_pass = TensorStats()
    for piece in np.array_split(large, 8):  # the range grows after the first piece
        one_pass.update(piece)
    small_stats = TensorStats()
    small_stats.update(small)
    return {
        "normal 4k, 1 pass": small_stats,
        "relu 1M, 1 pass": one_pass,
        "relu 1M, exact": collect_exact(np.array_split(large, 8)),
    }


def bench_amax_per_tensor(repeat: int) -> None:
    """CPU milliseconds per tensor of each method (process time: the machine's other load is not counted)."""
    print(f"amax per tensor, CPU ms (best of {repeat} runs of 20 calls):")
    for label, stats in _amax_inputs().items():
        cells = []
        for method in ("max", "percentile", "entropy", "mse"):
            compute_amax(
                stats, method
            )  # warm the per-size caches, as every tensor after the first finds them
            best = float("inf")
            for _ in range(repeat):
                start = time.process_time()
                for _ in range(20):
                    compute_amax(stats, method)
                best = min(best, (time.process_time() - start) / 20)
            cells.append(f"{method} {best * 1e3:6.3f}")
        print(f"  {label:<18s} ({stats.hist.size} bins): " + "  ".join(cells))


def _cnn(size: int) -> tuple[onnx.ModelProto, list[str]]:
    """Conv/Relu stack, 3 -> 16 -> 32 -> 64 -> 64 channels, stride 2 on the first three."""
    rng = np.random.default_rng(1)
    nodes, inits, observed = [], [], []
    previous, channels = "images", 3
    for index, (out_channels, stride) in enumerate(((16, 2), (32, 2), (64, 2), (64, 1))):
        weight = (rng.standard_normal((out_channels, channels, 3, 3)) * 0.2).astype(np.float32)
        inits.append(onnx.numpy_helper.from_array(weight, f"w{index}"))
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w{index}"], [f"conv{index}"], pads=[1, 1, 1, 1], strides=[stride, stride]
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{index}"], [f"relu{index}"]))
        observed += [f"conv{index}", f"relu{index}"]
        previous, channels = f"relu{index}", out_channels
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), ["images", *observed]


def bench_collect(samples: int, size: int) -> None:
    model, names = _cnn(size)
    rng = np.random.default_rng(2)
    frames = [rng.random((1, 3, size, size), dtype=np.float32) for _ in range(samples)]
    data = IterableData(frames, model)
    start = time.perf_counter()
    stats = collect_statistics(model, names, data, progress=True)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"collect_statistics {len(names)} tensors, {samples} x 3x{size}x{size}: {seconds:.2f} s "
        f"({samples / seconds:.1f} samples/s), peak RSS {peak_mb:.0f} MB (input frames alone "
        f"{samples * frames[0].nbytes / 2**20:.0f} MB)"
    )
    for method in ("entropy", "mse"):
        start = time.perf_counter()
        for item in stats.values():
            compute_amax(item, method)
        print(f"  {method} amax for all tensors: {(time.perf_counter() - start) * 1e3:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--amax-only", action="store_true", help="only the per-tensor amax timing")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bench_amax_per_tensor(args.repeat)
    if args.amax_only:
        return
    bench_histogram()
    bench_collect(args.samples, args.size)


if __name__ == "__main__":
    main()

"""Benchmark the IR and the compiler at scale: synthetic graphs of 5k-40k nodes.

Run: ``python bench/bench_ir.py [--sizes 5000,10000,20000,40000] [--shapes chain,ladder,fanin]
[--max-seconds 120] [--io-only]``

Two tables:

1. IR load -> sort -> dump -> save on ``build_chain_model`` (linearity of the IR itself).
2. Per shape (``chain``, ``ladder``, ``fanin``: ``qdq_compiler.models.build_scale_model``) and size: the whole
   ``trt-int8`` pipeline and ``explain`` (lint + fusion prediction, what ``qdqc explain`` computes).
   Calibration statistics come from a calibration cache written beforehand (one histogram per tensor of
   the float model, untimed), so model inference is not what is timed. Each phase runs in a child process
   with a time cap; a phase over the cap is reported as ``> CAP`` and killed, not waited for (``explain``
   then runs on a stand-in for the pipeline's output, :func:`qdq_stand_in`, marked ``*`` in the table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from qdq_compiler.ir import dump, load_model, save_model
from qdq_compiler.models.synthetic import SCALE_SHAPES, build_chain_model, build_scale_model

MARK = "@@BENCH@@"


# ------------------------------------------------------------------------------------ IR only
def measure_io(num_nodes: int, folder: Path) -> dict[str, float]:
    """Seconds spent in each phase for one synthetic model."""
    source = folder / f"chain_{num_nodes}.onnx"
    proto = build_chain_model(num_nodes)
    onnx.save_model(proto, source)
    timings: dict[str, float] = {"nodes": float(len(proto.graph.node))}
    start = time.perf_counter()
    model = load_model(source)
    timings["load"] = time.perf_counter() - start
    start = time.perf_counter()
    model.graph.sort()
    timings["sort"] = time.perf_counter() - start
    start = time.perf_counter()
    text = dump(model, sort=False)
    timings["dump"] = time.perf_counter() - start
    start = time.perf_counter()
    save_model(model, folder / f"chain_{num_nodes}.out.onnx")
    timings["save"] = time.perf_counter() - start
    timings["total"] = timings["load"] + timings["sort"] + timings["dump"] + timings["save"]
    timings["dump_lines"] = float(text.count("\n"))
    return timings


def io_table(sizes: list[int]) -> None:
    print(
        f"{'nodes':>7} {'load s':>8} {'sort s':>8} {'dump s':>8} {'save s':>8} {'total s':>8}"
        f" {'ms/1k nodes':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            t = measure_io(size, Path(tmp))
            per_k = 1000 * t["total"] / (t["nodes"] / 1000)
            print(
                f"{int(t['nodes']):7d} {t['load']:8.3f} {t['sort']:8.3f} {t['dump']:8.3f} {t['save']:8.3f} "
                f"{t['total']:8.3f} {per_k:12.1f}"
            )


# ------------------------------------------------------------------------------------ pipeline + explain
def write_stats_cache(proto: onnx.ModelProto, path: Path) -> None:
    """A calibration cache with a histogram for every tensor of ``proto`` (8 distinct ranges, seeded)."""
    from qdq_compiler.calib.cache import CacheKey, model_sha256, save_cache
    from qdq_compiler.calib.histogram import DEFAULT_NUM_BINS, TensorStats

    rng = np.random.default_rng(0)
    sample = rng.standard_normal(4096).astype(np.float32)
    variants = []
    for k in range(8):
        stats = TensorStats(DEFAULT_NUM_BINS)
        stats.update(sample * np.float32(1.0 + 0.25 * k))
        variants.append(stats)
    names = [i.name for i in proto.graph.input] + [o for node in proto.graph.node for o in node.output if o]
    table = {name: variants[index % len(variants)] for index, name in enumerate(names)}
    key = CacheKey(model_sha256(proto), "synthetic", "none", DEFAULT_NUM_BINS, 1)
    save_cache(path, table, key)


def qdq_stand_in(proto: onnx.ModelProto, record_shapes: bool = True) -> onnx.ModelProto:
    """What ``trt-int8`` makes of these graphs, built directly (linear time): the explain input when the
    pipeline ran past its cap. Each Conv reads its activation through one shared Q->DQ per tensor and its
    weight as a per-channel INT8 initializer behind a DQ (axis 0); everything else stays float. With
    ``record_shapes`` the tensors' shapes are recorded (value_info), as in the pipeline's output.
    """
    from onnx import helper, numpy_helper

    graph = onnx.GraphProto()
    graph.CopyFrom(proto.graph)
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = list(graph.initializer)
    quantized: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Conv":
            x, w = node.input[0], node.input[1]
            if x not in quantized:
                scale = numpy_helper.from_array(np.float32(0.01 * (1 + len(quantized) % 8)), f"{x}_scale")
                zero = numpy_helper.from_array(np.int8(0), f"{x}_zero_point")
                inits += [scale, zero]
                nodes.append(helper.make_node("QuantizeLinear", [x, scale.name, zero.name], [f"{x}_q"]))
                nodes.append(
                    helper.make_node("DequantizeLinear", [f"{x}_q", scale.name, zero.name], [f"{x}_dq"])
                )
                quantized[x] = f"{x}_dq"
            amax = np.abs(weights[w]).reshape(weights[w].shape[0], -1).max(axis=1)
            w_scale = (np.maximum(amax, 1e-8) / 127).astype(np.float32)
            shape = (-1,) + (1,) * (weights[w].ndim - 1)
            w_int8 = np.clip(np.round(weights[w] / w_scale.reshape(shape)), -127, 127).astype(np.int8)
            inits += [
                numpy_helper.from_array(w_int8, f"{w}_int8"),
                numpy_helper.from_array(w_scale, f"{w}_scale"),
                numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), f"{w}_zero_point"),
            ]
            nodes.append(
                helper.make_node(
                    "DequantizeLinear", [f"{w}_int8", f"{w}_scale", f"{w}_zero_point"], [f"{w}_dq"], axis=0
                )
            )
            node.input[0], node.input[1] = quantized[x], f"{w}_dq"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    del graph.initializer[:]
    graph.initializer.extend(t for t in inits if t.name in used)
    model = helper.make_model(graph, opset_imports=list(proto.opset_import))
    # The pipeline's output records every tensor's shape (infer-shapes); so does its stand-in.
    return onnx.shape_inference.infer_shapes(model) if record_shapes else model


def worker_pipeline(source: Path, cache: Path, target: Path) -> dict[str, float]:
    """Run trt-int8 on ``source`` with the cache's statistics; write ``target``; seconds of the run only."""
    from qdq_compiler.calib.cache import load_cache, read_cache_key
    from qdq_compiler.pipelines import TRT_INT8
    from qdq_compiler.pm import PassContext, PassManager

    stats = load_cache(cache, read_cache_key(cache))
    model = load_model(source)
    start = time.perf_counter()
    # equalize-channels measures per-channel ranges by running the model on calibration data: inference,
    # like the statistics, so it is left out of what is timed (the synthetic graphs have no data)
    PassManager(TRT_INT8.replace("equalize-channels,", "")).run(model, PassContext(calibration_stats=stats))
    seconds = time.perf_counter() - start
    save_model(model, target)
    return {"seconds": seconds}


def worker_explain(source: Path) -> dict[str, float]:
    """``explain`` on a compiled model: lint + fusion prediction (+ the trtexec line), seconds."""
    from qdq_compiler.targets.explain import explain_model

    model = load_model(source)
    start = time.perf_counter()
    explained = explain_model(str(source), model)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "int8_share": explained.fusion.int8_mac_share}


def _child(args: list[str], cap: float) -> dict[str, float] | None:
    """Run this script as a worker; its result, or None when it ran past ``cap`` seconds (killed)."""
    command = [sys.executable, __file__, "--worker", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=cap + 15)
    except subprocess.TimeoutExpired:
        return None
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK) :])
            return None if result["seconds"] > cap else result
    raise RuntimeError(f"worker {args[0]} failed:\n{done.stderr[-3000:]}")


def _cell(result: dict[str, float] | None, cap: float) -> str:
    return f"> {cap:.0f}" if result is None else f"{result['seconds']:.2f}"


def scale_table(
    sizes: list[int], shapes: list[str], cap: float, phases: set[str], bare: bool = False
) -> None:
    """Print nodes x shape: pipeline s, explain s, ms per 1k nodes (each)."""
    print(
        f"\n{'shape':<7} {'nodes':>6} {'pipeline s':>11} {'explain s':>10} {'pipe ms/1k':>11} "
        f"{'expl ms/1k':>11} {'INT8 MACs':>9}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for shape in shapes:
            for size in sizes:
                source, cache = folder / f"{shape}_{size}.onnx", folder / f"{shape}_{size}.cache"
                compiled = folder / f"{shape}_{size}.int8.onnx"
                proto = build_scale_model(shape, size)
                onnx.save_model(proto, source)
                pipe = None
                if "pipeline" in phases:
                    write_stats_cache(proto, cache)
                    pipe = _child(["pipeline", str(source), str(cache), str(compiled)], cap)
                if pipe is None:  # explain the stand-in for the pipeline's output instead (marked *)
                    onnx.save_model(qdq_stand_in(proto, record_shapes=not bare), compiled)
                expl = _child(["explain", str(compiled)], cap) if "explain" in phases else None
                per_k = [
                    "-" if r is None else f"{1000 * r['seconds'] / (size / 1000):.1f}" for r in (pipe, expl)
                ]
                cells = [
                    _cell(r, cap) if name in phases else "skipped"
                    for name, r in (("pipeline", pipe), ("explain", expl))
                ]
                share = "-" if expl is None else f"{100 * expl['int8_share']:.0f}%"
                star = "" if pipe is not None else "*"
                print(
                    f"{shape:<7} {size:6d} {cells[0]:>11} {cells[1] + star:>10} "
                    f"{per_k[0]:>11} {per_k[1]:>11} {share:>9}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,10000,20000,40000")
    parser.add_argument("--shapes", default=",".join(SCALE_SHAPES))
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time cap per phase and case")
    parser.add_argument("--phases", default="pipeline,explain", help="pipeline, explain or both")
    parser.add_argument(
        "--bare-stand-in", action="store_true", help="stand-in without recorded shapes (explain infers them)"
    )
    parser.add_argument("--io-only", action="store_true", help="only the IR load/sort/dump/save table")
    parser.add_argument("--no-io", action="store_true", help="skip the IR load/sort/dump/save table")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *paths = args.worker
        result = worker_pipeline(*map(Path, paths)) if kind == "pipeline" else worker_explain(Path(paths[0]))
        print(MARK + json.dumps(result), flush=True)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    shapes = [s.strip() for s in args.shapes.split(",")]
    unknown = sorted(set(shapes) - set(SCALE_SHAPES))
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; expected {', '.join(SCALE_SHAPES)}")
    if not args.no_io:
        io_table(sizes)
    if not args.io_only:
        scale_table(sizes, shapes, args.max_seconds, set(args.phases.split(",")), args.bare_stand_in)


if __name__ == "__main__":
    main()

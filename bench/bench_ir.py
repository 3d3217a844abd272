"""Benchmark: IR load -> sort -> dump -> save on synthetic models of 5k, 10k and 20k nodes.

Run: python bench/bench_ir.py [--sizes 5000,10000,20000]
Prints seconds per phase and the time per 1k nodes, so linearity can be read off.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx

from qdq_compiler.ir import dump, load_model, save_model
from qdq_compiler.models.synthetic import build_chain_model


def measure(num_nodes: int, folder: Path) -> dict[str, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,10000,20000")
    args = parser.parse_args()
    print(
        f"{'nodes':>7} {'load s':>8} {'sort s':>8} {'dump s':>8} {'save s':>8} {'total s':>8}"
        f" {'ms/1k nodes':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            t = measure(size, Path(tmp))
            per_k = 1000 * t["total"] / (t["nodes"] / 1000)
            print(
                f"{int(t['nodes']):7d} {t['load']:8.3f} {t['sort']:8.3f} {t['dump']:8.3f} {t['save']:8.3f} "
                f"{t['total']:8.3f} {per_k:12.1f}"
            )


if __name__ == "__main__":
    main()

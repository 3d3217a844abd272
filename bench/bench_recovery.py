"""Benchmark: `qdqc compile --target-sqnr / --max-metric-drop` on the bundled models, and the evaluation
engine's throughput by executor.

Part 1 (``--part search``): for each bundled model, compile with its calibration data and a fallback
target measured on its validation data (an SQNR target, and a task-metric drop against its labels),
each in a fresh process: the metric reached, INT8 MAC share, layers kept float, variants measured, wall
time, peak RSS (the process or its largest pool worker) and the peak of the summed RSS of the process and
every descendant (pool workers; with ``--search-ray`` Ray's gcs_server, raylet and workers), sampled from
/proc. ``--auto`` adds ``--method auto`` (validated on the engine first).

Part 2 (``--part throughput``): one setup of one model, then the same variants (single layers kept float)
measured in this process, by local pools of 1, 2 and 4 workers, and on local Ray instances of 1, 2 and 4
workers: variants per second after start-up, start-up time, peak RSS (and the summed RSS of every
descendant process). Every executor must give the same measurements (checked).

    python bench/bench_recovery.py [--part search,throughput] [--models detector,classifier,segmenter]
        [--eval-limit 32] [--variants 16] [--ray] [--search-ray] [--auto]
        -> bench/results/recovery.md, recovery.json
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "qdq_compiler" / "data"
RESULTS = Path(__file__).resolve().parent / "results"

# per model: its file, an SQNR target (~2-4 dB above its all-INT8 SQNR on 32 validation samples: 38.9,
# 26.4 and 21.0 dB) and the --max-metric-drop goal: labels (None: INT8 against FP32's result), metric, drop.
# The detector's goal is against FP32: on 32 images its INT8 mAP@0.5 against the labels is above FP32's.
MODELS = {
    "detector": ("detector.onnx", 41.0, (None, "mAP@0.5:0.95", 0.03)),
    "classifier": ("classifier.onnx", 30.0, ("val.json", "top-1", 0.0)),
    "segmenter": ("segmenter.onnx", 24.0, ("val_masks", "IoU@0.5", 0.002)),
}
FALLBACK = re.compile(
    r"fallback: (\d+) layer\(s\) float, (.*), INT8 MAC share ([\d.]+)% \((\d+) variants, (\S+) x(\d+)"
)


def _peak_rss_mb() -> float:
    """Peak RSS of this process and of its largest finished child, MB (Linux: ru_maxrss in kB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def run_one(args: list[str]) -> None:
    """Child process: run one qdqc command, then print its peak RSS, exit code and the peak of its own RSS
    plus every descendant's (pool workers, Ray's processes; sampled) as the last line."""
    from qdq_compiler.cli import main

    with RssSampler() as sampler:
        code = main(args)
    print(f"__rss__ {_peak_rss_mb():.0f} {code} {sampler.total_peak_mb:.0f}")


def _flat_labels(path: Path, tmp: str) -> str:
    """The classifier's val.json nests its {file: class} table under "labels" (with the class names); `qdqc
    eval --labels` reads the flat table, so it is written out flat."""
    if path.suffix != ".json":
        return str(path)
    table = json.loads(path.read_text())
    flat = Path(tmp) / "labels.json"
    flat.write_text(json.dumps(table.get("labels", table)))
    return str(flat)


def search_row(name: str, goal: str, limit: int, workers: int, ray: bool, auto: bool = False) -> dict:
    model, sqnr, (labels, metric, drop) = MODELS[name]
    folder = DATA / name
    with tempfile.TemporaryDirectory() as tmp:
        args = ["compile", str(folder / model), "-o", f"{tmp}/out.onnx", "--calib", str(folder / "calib")]
        args += ["--eval", str(folder / "val"), "--eval-limit", str(limit), "--no-check"]
        if goal == "sqnr":
            args += ["--target-sqnr", str(sqnr)]
        else:
            args += ["--max-metric-drop", str(drop), "--metric", metric]
            args += ["--labels", _flat_labels(folder / labels, tmp)] if labels else []
        args += ["--ray", "--workers", str(workers)] if ray else ["--workers", str(workers)]
        args += ["--method", "auto"] if auto else []
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(args)], capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - started
    out = done.stdout
    rss = re.search(r"__rss__ (\d+) (\d+)(?: (\d+))?", out)
    found = FALLBACK.search(out)
    row = {
        "model": name,
        "goal": goal + (" --ray" if ray else "") + (" --method auto" if auto else ""),
        "seconds": round(seconds, 1),
        "peak_rss_mb": int(rss.group(1)) if rss else None,
        "exit": int(rss.group(2)) if rss else done.returncode,
        "peak_rss_sum_mb": int(rss.group(3)) if rss and rss.group(3) else None,
    }
    header = re.search(r"fallback search: (.*) on (\d+) samples", out)
    baseline = re.search(r"baseline\s+all INT8\s+\d+ float\s+(.*?)\s+INT8 MACs", out)
    row["target"] = header.group(1) if header else ""
    row["baseline"] = baseline.group(1) if baseline else ""
    if found:
        row.update(
            float_layers=int(found.group(1)),
            reached=found.group(2),
            int8_mac_share=float(found.group(3)),
            variants=int(found.group(4)),
            executor=f"{found.group(5)} x{found.group(6)}",
        )
        flags = re.search(r"flags: (.*)", out)
        row["flags"] = flags.group(1) if flags else ""
    else:
        row["reached"] = (done.stderr.strip().splitlines() or ["?"])[-1]
    return row


def throughput(name: str, limit: int, count: int, workers: list[int], ray: bool) -> list[dict]:
    """Measure ``count`` single-layer variants of ``name`` with each executor; the same results checked."""
    from qdq_compiler.cli_options import DEFAULT_COMPILE_PIPELINE, prepare_pipeline
    from qdq_compiler.evaluation.data import open_eval_data
    from qdq_compiler.ir import load_model, to_proto
    from qdq_compiler.pm import load_passes
    from qdq_compiler.search.engine import Variant, build_setup
    from qdq_compiler.search.executors import InProcessExecutor, PoolExecutor, RayExecutor
    from qdq_compiler.search.fallback import fallback_units

    model = MODELS[name][0]
    folder = DATA / name
    load_passes()
    opts = {"calib": str(folder / "calib"), "calib_cache": None, "batch_size": None, "calib_limit": None}
    manager, ctx = prepare_pipeline(str(folder / model), DEFAULT_COMPILE_PIPELINE, opts, quiet=True)
    float_proto = to_proto(load_model(str(folder / model)))
    batches = list(open_eval_data(str(folder / "val"), float_proto, limit=limit).batches())
    setup, compiler = build_setup(float_proto, manager, ctx, batches)
    units = [unit for unit in fallback_units(compiler.compile(())) if len(unit.layers) == 1][:count]
    variants = [Variant(unit.layers) for unit in units]
    cache_mb = (
        sum(a.nbytes for part in (setup.batches, setup.reference) for d in part for a in d.values()) / 2**20
    )
    rows, reference = [], None
    configs: list[tuple[str, object]] = [("in-process", lambda: InProcessExecutor(setup))]
    configs += [(f"pool x{n}", lambda n=n: PoolExecutor(setup, n)) for n in workers]
    if ray:
        configs += [(f"ray x{n}", lambda n=n: RayExecutor(setup, "local", n)) for n in (1, 2, 4)]
    for label, make in configs:
        with RssSampler() as sampler:
            started = time.perf_counter()
            executor = make()  # type: ignore[operator]
            executor.map(variants[:1] * executor.workers)  # every worker started and warm
            ready = time.perf_counter()
            measured = executor.map(variants)
            seconds = time.perf_counter() - ready
            worker_rss = _worker_peak_rss_mb(executor)
            executor.close()
        digests = [m.model_sha256 for m in measured]
        same = reference is None or digests == reference
        reference = reference or digests
        rows.append(
            {
                "model": name,
                "executor": label,
                "variants": len(variants),
                "startup_s": round(ready - started, 1),
                "seconds": round(seconds, 1),
                "variants_per_s": round(len(variants) / seconds, 2),
                "same_results": same,
                "float_cache_mb": round(cache_mb, 1),
                "main_rss_mb": round(_vm_hwm_mb("self")),
                "worker_peak_rss_mb": worker_rss,
                "children_peak_sum_mb": round(sampler.children_peak_mb),
                "total_peak_sum_mb": round(sampler.total_peak_mb),
                "children": sampler.most_children,
            }
        )
        print(rows[-1], flush=True)
    return rows


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (its children, theirs, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rss_mb(pid: object) -> float:
    """Current RSS of a process (Linux /proc VmRSS), MB; 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Samples, every ``period`` s, the summed RSS of this process's descendants (pool workers; a local Ray
    instance's gcs_server, raylet and actor workers) and of this process, keeping the peaks of the sums."""

    def __init__(self, period: float = 0.2) -> None:
        import threading

        self.period = period
        self.children_peak_mb = 0.0
        self.total_peak_mb = 0.0
        self.most_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import os

        children = _descendants(os.getpid())
        summed = sum(_rss_mb(pid) for pid in children)
        self.most_children = max(self.most_children, len(children))
        self.children_peak_mb = max(self.children_peak_mb, summed)
        self.total_peak_mb = max(self.total_peak_mb, summed + _rss_mb("self"))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _vm_hwm_mb(pid: object) -> float:
    """Peak RSS of a live process (Linux /proc VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _worker_peak_rss_mb(executor: object) -> str:
    """The largest peak RSS of a pool's worker processes (read before they stop); the in-process executor's
    is the main process's; Ray's workers are not measured here."""
    processes = getattr(getattr(executor, "pool", None), "_processes", None)
    if isinstance(processes, dict) and processes:
        return str(round(max(_vm_hwm_mb(pid) for pid in processes)))
    return "(main)" if type(executor).__name__ == "InProcessExecutor" else "n/a"


def _merge_rows(old: list[dict], new: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Rows of an earlier run, with the rows of this run replacing those of the same keys."""
    fresh = {tuple(row[key] for key in keys) for row in new}
    return [row for row in old if tuple(row.get(key) for key in keys) not in fresh] + new


def _table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(column, "")) for column in columns) + " |")
    return "\n".join(lines)


SEARCH_COLUMNS = (
    "model goal target baseline reached int8_mac_share float_layers variants seconds peak_rss_mb "
    "peak_rss_sum_mb exit"
)
THROUGHPUT_COLUMNS = (
    "model executor variants startup_s seconds variants_per_s same_results float_cache_mb main_rss_mb "
    "worker_peak_rss_mb children_peak_sum_mb total_peak_sum_mb children"
)


def render(results: dict) -> str:
    """Both tables as markdown."""
    search = _table(results["search"], SEARCH_COLUMNS.split())
    return search + "\n\n" + _table(results["throughput"], THROUGHPUT_COLUMNS.split()) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--part", default="search,throughput")
    parser.add_argument("--models", default="detector,classifier,segmenter")
    parser.add_argument("--goals", default="sqnr,metric")
    parser.add_argument("--eval-limit", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="workers of the search runs")
    parser.add_argument("--variants", type=int, default=16, help="variants of the throughput runs")
    parser.add_argument("--throughput-model", default="detector")
    parser.add_argument("--ray", action="store_true", help="also on a local Ray instance")
    parser.add_argument("--search-ray", action="store_true", help="the searches on a local Ray instance")
    parser.add_argument("--auto", action="store_true", help="the searches with --method auto")
    args = parser.parse_args()
    if args.one:
        run_one(json.loads(args.one))
        return
    parts = args.part.split(",")
    results: dict = {"search": [], "throughput": []}
    if "search" in parts:
        for name in args.models.split(","):
            for goal in args.goals.split(","):
                row = search_row(name, goal, args.eval_limit, args.workers, args.search_ray, args.auto)
                print(row, flush=True)
                results["search"].append(row)
    if "throughput" in parts:
        results["throughput"] = throughput(
            args.throughput_model, args.eval_limit, args.variants, [1, 2, 4], args.ray
        )
    RESULTS.mkdir(exist_ok=True)
    saved = RESULTS / "recovery.json"
    if saved.exists():  # one part, or some models, run again: keep the other rows
        earlier = json.loads(saved.read_text())
        results["search"] = _merge_rows(earlier.get("search", []), results["search"], ("model", "goal"))
        results["throughput"] = _merge_rows(
            earlier.get("throughput", []), results["throughput"], ("model", "executor")
        )
    saved.write_text(json.dumps(results, indent=2))
    text = render(results)
    (RESULTS / "recovery.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Long fuzzing run: random CNNs through every quantization path until time runs out.

    python bench/fuzz.py --minutes 30 [--seed S] [--out bench/results/fuzz] [--ci-features]

Hypothesis draws the graphs (random seeds unless --seed). A failure whose signature (path, stage, message
without numbers) is new is shrunk by hypothesis to a small graph and saved to ``OUT/<n>-<path>-<stage>/``:
``model.onnx`` (the float model), ``calibration.npz`` (the batches), ``README.txt`` (the generator's choices,
the failure, the known issue it matches). Later failures with a known signature are only counted. Every
case also runs ``onnx.checker`` and onnxruntime on the float model first (qdq_compiler/models/fuzz_check.py).
Replay a saved case with ``python bench/fuzz.py --replay OUT/<n>-...``.
"""

from __future__ import annotations

import argparse
import collections
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import UnsatisfiedAssumption

from qdq_compiler.models.fuzz_check import PATHS, FuzzFailure, Rejected, check_random_cnn
from qdq_compiler.models.random_cnn import ALL_FEATURES, Features, HypothesisChooser, describe, random_cnn

# Known bugs of issue 12 (fixed on other branches at the time of writing), by what their failure says.
KNOWN = [
    (r"QuantizeLinear.*(unsupported type: tensor\(float16\)|y_scale has inconsistent type)", "issue-12 2d"),
    (r"Inferred elem type differs from existing elem type: \(10\) vs \(1\)", "issue-12 2d (float16)"),
    (r"b zero point is not valid", "issue-12 2f"),
]
CI_FEATURES = Features(float16=False, matmul_rank4_weight=False, zero_weight_channel=False)


def classify(failure: FuzzFailure, description: str) -> str:
    """The known issue a failure matches, by its message, else by the graph (see README.txt)."""
    for pattern, label in KNOWN:
        if re.search(pattern, failure.message):
            return label
    if (
        failure.path == "ort-defaults"
        and failure.stage.startswith("sqnr")
        and re.search(r"^(Relu|Clip)$", description, re.M)
    ):
        return "probably issue-12 2b (a Relu/Clip the UINT8 range encoded)"
    if failure.stage == "sqnr-onnxruntime-optimized" and "all-zero output channel" in description:
        return "probably issue-12 2e (scale ~1e-10 of a zero channel overflows the fused INT32 bias)"
    if "float16" in description.splitlines()[0]:
        return "float16 model: check against issue-12 2d"
    return "NEW"


def save_case(folder: Path, cnn, failure: FuzzFailure, label: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(cnn.model, folder / "model.onnx")
    batches = cnn.calibration_batches(8)
    np.savez(
        folder / "calibration.npz",
        **{f"{name}_{i}": batch[name] for i, batch in enumerate(batches) for name in batch},
    )
    (folder / "README.txt").write_text(
        f"failure: {failure}\nclass: {label}\n\ngraph:\n{describe(cnn)}\n\n"
        f"replay: python bench/fuzz.py --replay {folder}\n"
    )
    with open(folder / "cnn.pkl", "wb") as handle:
        import pickle

        pickle.dump(cnn, handle)


def replay(folder: Path) -> int:
    import pickle

    with open(folder / "cnn.pkl", "rb") as handle:
        cnn = pickle.load(handle)
    print(describe(cnn))
    try:
        for result in check_random_cnn(cnn):
            print(result)
    except FuzzFailure as failure:
        print("FAIL", failure)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/fuzz"))
    parser.add_argument(
        "--ci-features", action="store_true", help="only what the CI test draws (known-bug features off)"
    )
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--replay", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.getLogger("qdqc").setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    if args.replay:
        return replay(args.replay)
    features = CI_FEATURES if args.ci_features else ALL_FEATURES
    paths = tuple(args.paths.split(","))
    deadline = time.monotonic() + 60 * args.minutes
    known: dict[str, str] = {}  # signature -> folder of its reproducer
    counts: collections.Counter[str] = collections.Counter()
    labels: dict[str, str] = {}
    stats = collections.Counter()
    last: dict = {}

    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        derandomize=False,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate, Phase.shrink),
    )
    @given(st.data())
    def one_round(data):
        cnn = random_cnn(HypothesisChooser(data.draw), features)
        try:
            results = check_random_cnn(cnn, paths)
        except Rejected as exc:
            stats["rejected"] += 1
            raise UnsatisfiedAssumption() from exc
        except FuzzFailure as failure:
            if failure.signature in known:
                counts[failure.signature] += 1
                return
            last.update(cnn=cnn, failure=failure)
            raise
        stats["passed"] += 1
        stats["paths skipped"] += sum(r.quantized_tensors == 0 and bool(r.note) for r in results)
        stats["ort saturation notes"] += sum("saturate" in r.note for r in results)

    rounds = 0
    started = time.monotonic()
    while time.monotonic() < deadline:
        rounds += 1
        seed = args.seed + rounds if args.seed is not None else None
        runner = one_round if seed is None else __import__("hypothesis").seed(seed)(one_round)
        try:
            runner()
        except Exception as exc:
            if "cnn" not in last:
                print(
                    f"round {rounds}: hypothesis stopped: {type(exc).__name__}: {str(exc)[:200]}", flush=True
                )
                continue
            cnn, failure = last.pop("cnn"), last["failure"]
            label = classify(failure, describe(cnn))
            stage = re.sub(r"[^a-z0-9]+", "-", failure.stage)
            folder = args.out / f"{len(known) + 1:02d}-{failure.path}-{stage}"
            save_case(folder, cnn, failure, label)
            known[failure.signature], labels[failure.signature] = str(folder), label
            counts[failure.signature] += 1
            graph = describe(cnn).replace("\n", "\n    ")
            print(
                f"[{(time.monotonic() - started) / 60:5.1f} min] FAILURE {failure}\n    class: {label}\n"
                f"    minimal reproducer: {folder}\n    {graph}",
                flush=True,
            )
    minutes = (time.monotonic() - started) / 60
    print(
        f"\nsummary: {minutes:.1f} min, {stats['passed']} graphs passed every path, "
        f"{sum(counts.values())} failed, {stats['rejected']} rejected (float output all zero); "
        f"{stats['ort saturation notes']} optimized runs explained by onnxruntime's u8s8 saturation, "
        f"{stats['paths skipped']} onnxruntime paths skipped (constant tensor or quantize_static refused)"
    )
    print("count | class | reproducer | signature")
    for signature, count in counts.most_common():
        print(f"{count} | {labels[signature]} | {known[signature]} | {signature}")
    return 1 if counts else 0


if __name__ == "__main__":
    sys.exit(main())

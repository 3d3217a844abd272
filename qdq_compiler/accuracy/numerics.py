"""Run a model in onnxruntime and measure how far its outputs are from a reference (SQNR in dB).

Models run on the CPU with graph optimizations off and one thread, so Q/DQ nodes execute as written
(quantize, round, dequantize in float) and the same inputs always give the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from qdq_compiler.calib.subgraph import ONNXRUNTIME_DOMAINS, cut_to
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir.external import inference_session
from qdq_compiler.ir.op_facts import describe_node_proto

__all__ = [
    "ModelRunner",
    "OutputComparison",
    "compare_outputs",
    "onnxruntime_part",
    "run_outputs",
    "sqnr_db",
    "sqnr_from_powers",
]


def onnxruntime_part(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` cut before the nodes onnxruntime cannot run (TensorRT plugins such as an end-to-end NMS).

    The cut model's outputs are the original outputs that do not depend on such a node, then the inputs
    of those nodes. Returns the model (unchanged when nothing needs cutting) and the nodes cut, as labels.
    """
    graph = model.graph
    foreign = [node for node in graph.node if node.domain not in ONNXRUNTIME_DOMAINS]
    if not foreign:
        return model, []
    tainted = {name for node in foreign for name in node.output}
    for node in graph.node:  # graph order: a consumer comes after its producer
        if any(name in tainted for name in node.input):
            tainted.update(node.output)
    constants = {init.name for init in graph.initializer}
    wanted = [out.name for out in graph.output if out.name not in tainted]
    wanted += [
        name
        for node in foreign
        for name in node.input
        if name and name not in tainted and name not in constants
    ]
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    cut_to(cut.graph, wanted)
    return cut, [f"{node.domain}::{describe_node_proto(node)}" for node in foreign]


class ModelRunner:
    """One onnxruntime session of ``model``, run batch by batch: every graph output by name.

    A model ending in nodes onnxruntime cannot run is cut before them (:func:`onnxruntime_part`).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        import onnxruntime as ort

        model, _ = onnxruntime_part(model)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = inference_session(model, options)
        except Exception as exc:  # onnxruntime raises its own types; the message says what is wrong
            raise QdqcError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
        self.names = [out.name for out in self.session.get_outputs()]

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self.session.run(self.names, dict(batch))
        except Exception as exc:  # a type or shape onnxruntime refuses, reported in its own words
            raise QdqcError(f"onnxruntime cannot run the model: {str(exc).splitlines()[0]}") from None
        return {name: np.asarray(value) for name, value in zip(self.names, outputs, strict=True)}


def run_outputs(model: onnx.ModelProto, batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every graph output of ``model`` over ``batches``, concatenated along axis 0, by output name.

    A model ending in nodes onnxruntime cannot run is cut before them (:func:`onnxruntime_part`).
    """
    runner = ModelRunner(model)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in runner.names}
    for batch in batches:
        for name, value in runner(batch).items():
            collected[name].append(value)
    return {name: np.concatenate(parts) if parts else np.empty(0) for name, parts in collected.items()}


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio, ``10 log10(sum(ref^2) / sum((ref - test)^2))``, in float64.

    ``inf`` when the two are equal; ``-inf`` when the reference is all zeros but the test is not; ``nan``
    when either holds NaN or Inf.
    """
    ref = np.asarray(reference, dtype=np.float64).ravel()
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64).ravel()) ** 2))
    return sqnr_from_powers(float(np.sum(ref**2)), noise)


def sqnr_from_powers(signal: float, noise: float) -> float:
    """SQNR in dB from the sums of squares of the reference (``signal``) and of the error (``noise``), with
    :func:`sqnr_db`'s conventions (``inf``, ``-inf``, ``nan``)."""
    if not math.isfinite(noise):  # NaN or Inf in either: no meaningful ratio
        return math.nan
    if noise <= 0.0:  # no error (a negative sum of squares is the rounding of zero)
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0.0 else -math.inf


@dataclass(frozen=True)
class OutputComparison:
    """SQNR of every output, and over all outputs together (each output normalised by its own power)."""

    sqnr_db: float
    per_output: dict[str, float]


def compare_outputs(reference: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]) -> OutputComparison:
    """Compare ``test`` with ``reference`` output by output (names must match, shapes too).

    The overall figure averages the outputs' relative noise powers, so an output with large values (box
    coordinates in pixels) does not drown one with small values (class scores). It is ``nan`` when any
    output's is. A reference holding NaN or Inf is refused: no SQNR means anything against it.
    """
    missing = sorted(set(reference) - set(test))
    if missing:
        raise QdqcError(f"the compiled model lacks output(s) {', '.join(map(repr, missing))}")
    per_output: dict[str, float] = {}
    relative_noise: list[float] = []
    for name, ref in reference.items():
        out = test[name]
        if out.shape != ref.shape:
            raise QdqcError(f"output {name!r} has shape {out.shape}; the float model gives {ref.shape}")
        if not np.all(np.isfinite(ref)):
            raise QdqcError(f"the float model's output {name!r} holds NaN or Inf on these inputs")
        per_output[name] = sqnr_db(ref, out)
        relative_noise.append(10.0 ** (-per_output[name] / 10.0))
    mean_noise = float(np.mean(relative_noise)) if relative_noise else 0.0
    if math.isnan(mean_noise):
        return OutputComparison(math.nan, per_output)
    overall = -10.0 * math.log10(mean_noise) if mean_noise > 0.0 else math.inf
    return OutputComparison(overall, per_output)

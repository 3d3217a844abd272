"""calibrate's `gate-method` (default max): Sigmoid/HardSigmoid outputs are never clipped by the method.

A squeeze-excitation gate saturates at exactly 1, so the top of its histogram is a spike; entropy put the
bundled classifier's gates at 0.16-0.28 of their range and scaled every saturated activation down. Checked
against the float model in onnxruntime: the gate's amax is its observed max, and the output is closer to
float with the rule than without it.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qdq_compiler.accuracy.numerics import run_outputs, sqnr_db
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.pm import PassContext, PassManager, load_passes
from qdq_compiler.report.collect import activation_amax

GATE = "se.gate"  # the SE idiom's HardSigmoid output, quantized for the gate Mul (place-qdq int8-mul)


@pytest.fixture(scope="module")
def prepared(se_block_prepared) -> onnx.ModelProto:
    return se_block_prepared


def _samples(count: int = 16, seed: int = 0) -> np.ndarray:
    """Inputs 4x the builder's scale: the gate saturates at 1 for many channels."""
    return (np.random.default_rng(seed).standard_normal((count, 1, 3, 32, 32)) * 4.0).astype(np.float32)


def _quantized(prepared: onnx.ModelProto, calibrate: str):
    model = load_model(prepared)
    PassManager(f"place-qdq,{calibrate},fold-scales").run(model, PassContext(calibration_data=_samples()))
    return model


def test_a_gate_keeps_its_max_whatever_the_method(prepared) -> None:
    by_max = activation_amax(_quantized(prepared, "calibrate{method=max}"))[GATE]
    with_rule = activation_amax(_quantized(prepared, "calibrate{method=entropy}"))
    without = activation_amax(_quantized(prepared, "calibrate{method=entropy,gate-method=default}"))
    assert with_rule[GATE] == by_max
    assert without[GATE] < 0.5 * by_max  # entropy clips the spike at 1: the rule is what keeps it
    others = sorted(set(with_rule) - {GATE})
    assert others and [with_rule[n] for n in others] == [without[n] for n in others]


def test_the_rule_brings_the_output_closer_to_float(prepared) -> None:
    feeds = [{"input": sample} for sample in _samples(8, seed=1)]
    reference = run_outputs(prepared, feeds)
    output = prepared.graph.output[0].name

    def sqnr(calibrate: str) -> float:
        quantized = run_outputs(to_proto(_quantized(prepared, calibrate)), feeds)
        return sqnr_db(np.asarray(reference[output]), np.asarray(quantized[output]))

    assert sqnr("calibrate{method=entropy}") > sqnr("calibrate{method=entropy,gate-method=default}") + 3.0


def test_an_override_naming_the_gate_wins(prepared) -> None:
    amax = activation_amax(_quantized(prepared, "calibrate{method=max,overrides=[se.gate=percentile{p=50}]}"))
    by_max = activation_amax(_quantized(prepared, "calibrate{method=max}"))
    assert amax[GATE] < by_max[GATE]


def test_gate_method_refuses_auto() -> None:
    load_passes()
    with pytest.raises(QdqcError, match="gate-method"):
        PassManager("calibrate{gate-method=auto}")

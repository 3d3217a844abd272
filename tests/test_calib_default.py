"""The default calibration (issue 15, 3): percentile p=99.99 on the exact two-pass histogram.

Against the float model in onnxruntime: each activation's amax is the float tensor's own nearest-rank
99.99th percentile of |x|, to one exact bin, whatever order the samples come in (one pass would depend on
the first batch). Data that can be read only once, or a one-pass cache, serve the default as one pass.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import helper

from qdq_compiler.accuracy.numerics import run_outputs
from qdq_compiler.calib import DEFAULT_NUM_BINS
from qdq_compiler.ir import load_model
from qdq_compiler.pm import PassContext, PassManager, parse_pipeline
from qdq_compiler.report.collect import activation_amax


@pytest.fixture(scope="module")
def prepared(se_block_prepared) -> onnx.ModelProto:
    return se_block_prepared


def _samples() -> np.ndarray:
    """16 samples whose spread grows 8x after the first: a one-pass histogram's first bins are too fine."""
    rng = np.random.default_rng(3)
    scales = np.concatenate([[0.125], np.linspace(0.5, 1.0, 15)]).astype(np.float32)
    return rng.standard_normal((16, 1, 3, 32, 32)).astype(np.float32) * scales[:, None, None, None, None]


def _calibrated(prepared: onnx.ModelProto, samples: np.ndarray, calibrate: str = "calibrate"):
    model = load_model(prepared)
    PassManager(f"place-qdq,{calibrate}").run(model, PassContext(calibration_data=samples))
    return activation_amax(model)


def _float_values(prepared: onnx.ModelProto, names: list[str], samples: np.ndarray) -> dict[str, np.ndarray]:
    probe = onnx.ModelProto()
    probe.CopyFrom(prepared)
    known = {output.name for output in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in known)
    outputs = run_outputs(probe, [{"input": sample} for sample in samples])
    return {name: np.abs(np.asarray(outputs[name], dtype=np.float64)).ravel() for name in names}


def test_default_amax_is_the_float_tensors_percentile_to_one_exact_bin(prepared) -> None:
    samples = _samples()
    amax = _calibrated(prepared, samples)
    assert len(amax) >= 4  # the input, the block's convs, the SE pooling and gate
    values = _float_values(prepared, sorted(amax), samples)
    for name, found in amax.items():
        ordered = np.sort(values[name])
        rank = int(np.ceil(0.9999 * ordered.size)) - 1  # nearest rank
        width = ordered[-1] / DEFAULT_NUM_BINS  # one bin of the exact [0, absmax] histogram
        low, high = ordered[rank], min(ordered[rank] + width, ordered[-1])
        assert low * (1 - 1e-6) <= found <= high * (1 + 1e-6), name  # 1e-6: the scale is a float32


def test_default_scales_do_not_depend_on_the_sample_order(prepared) -> None:
    samples = _samples()
    forward, backward = _calibrated(prepared, samples), _calibrated(prepared, samples[::-1].copy())
    assert forward == backward
    one_pass = "calibrate{exact=false}"  # the grown histogram depends on the first batch: the check can fail
    assert _calibrated(prepared, samples, one_pass) != _calibrated(prepared, samples[::-1].copy(), one_pass)


def test_data_read_once_serve_the_default_as_one_pass_and_warn_only_when_two_passes_are_asked(
    prepared, caplog
) -> None:
    samples = _samples()
    for text, warns in (("calibrate", False), ("calibrate{exact=true}", True)):
        model, ctx = load_model(prepared), PassContext(calibration_data=iter(list(samples)))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            PassManager(f"place-qdq,{text}").run(model, ctx)
        assert {stats.binning for stats in ctx.calibration_stats.values()} == {"grow"}
        assert any("can be read only once" in r.getMessage() for r in caplog.records) == warns, text
    assert parse_pipeline("calibrate")[0].options.exact  # the default is two passes

"""Fuzzing: random valid CNNs through qdqc PTQ and through onnxruntime quantize_static + trt-int8-from-qdq.

Each drawn graph (qdq_compiler/models/random_cnn.py) is checked by
:func:`qdq_compiler.models.fuzz_check.check_random_cnn`: the float model passes ``onnx.checker`` and runs;
every output passes ``onnx.checker`` (full check) and ``qdqc lint`` without errors, runs in onnxruntime
with graph optimizations off and on, and reaches an SQNR floor against the float model derived from its
own quantization grid (qdq_compiler/accuracy/noise_budget.py):

* each quantized activation x with step s adds noise of power s**2/12 where x is inside the quantizer's
  range and (x - clamp(x))**2 where it is clipped; its relative noise is r = mean(noise) / mean(x**2),
  measured on the values the quantizer actually sees. A weight tensor (few values, rounded once) is
  charged the worst case (s/2)**2 per value against its own power, with its per-channel steps;
* with normalised weights a layer passes signal and noise with the same gain, so at the output the
  relative noises add: predicted SQNR = -10 log10(sum r_i). The floor takes the worst case of coherent
  addition, (sum sqrt(r_i))**2 (<= L * sum r_i for L quantizers), less the graph's own noise gain: how much
  the float model's output noise grows, relative to its signal, when one weighted layer is perturbed
  (measured per layer, the largest kept; > 1 where a BatchNorm, residual Add or head cancels signal);
* the float arithmetic's own error (a dot product of n terms: relative error <= n**1.5 * eps for terms
  of random sign) is one more term, so a graph left entirely float is checked too.

A model's INT8 grid therefore sets its own bar: a graph whose activations are spiky (large range, small
power) gets a lower floor than a smooth one, and a compiler error that costs more than the grid explains
(a dropped clamp, a zeroed branch, a wrong scale) falls below it.

The CI run is bounded (``MAX_EXAMPLES`` graphs, derandomized, so every run draws the same graphs);
``bench/fuzz.py --minutes N`` runs long with random seeds.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, note, reject, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from qdq_compiler.accuracy.noise_budget import noise_budget, noise_gain, sqnr_floor_db  # noqa: E402
from qdq_compiler.models.fuzz_check import PATHS, FuzzFailure, Rejected, check_random_cnn  # noqa: E402
from qdq_compiler.models.random_cnn import (  # noqa: E402
    ALL_FEATURES,
    HypothesisChooser,
    RandomChooser,
    describe,
    random_cnn,
)

MAX_EXAMPLES = 300  # ~0.1 s each (hypothesis favours small graphs): ~35 s on this 2-core machine, < 2 min

CI_FEATURES = ALL_FEATURES
CI_PATHS = PATHS


@pytest.fixture(autouse=True)
def _quiet_warnings():
    """qdqc warns about degenerate random graphs (nothing to quantize, ...); the checks are the test."""
    logger = logging.getLogger("qdqc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(st.data())
def test_random_cnns_compile_to_valid_accurate_models(data):
    cnn = random_cnn(HypothesisChooser(data.draw), CI_FEATURES)
    note(describe(cnn))
    try:
        results = check_random_cnn(cnn, CI_PATHS)
    except Rejected:
        reject()
    assert [r.path for r in results] == list(CI_PATHS)


def test_random_cnns_are_valid_and_deterministic():
    import onnx

    for seed in range(30):
        first, second = random_cnn(RandomChooser(seed)), random_cnn(RandomChooser(seed))
        assert first.model.SerializeToString() == second.model.SerializeToString()
        onnx.checker.check_model(first.model, full_check=True)
        batches = first.calibration_batches(2)
        np.testing.assert_array_equal(batches[0]["input"], second.calibration_batches(2)[0]["input"])


def test_the_generator_covers_every_construct():
    """Over a few hundred draws the generator uses every op and form the fuzzing promises."""
    ops, lines, opsets = set(), set(), set()
    for seed in range(300):
        cnn = random_cnn(RandomChooser(seed))
        ops.update(node.op_type for node in cnn.model.graph.node)
        lines.update(cnn.description)
        opsets.add(cnn.opset)
    assert {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "BatchNormalization",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Mul",
        "HardSwish",
        "Clip",
        "Add",
        "Concat",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Resize",
        "Pad",
        "Split",
        "Reshape",
        "Transpose",
    } <= ops
    text = "\n".join(lines)
    for construct in (
        "shares weights",
        "float16",
        "range ratio 1e4",
        "all-zero output channel",
        "input [1, 1,",
        "input [1, 3,",
        "MatMul weight [1, 1,",
    ):
        assert construct in text, construct
    assert re.search(r"Conv k\d s\d g(\d+) \((\1),", text), "a depthwise conv"
    assert re.search(r"Conv k\d s\d g([2-9]) \((?!\1,)", text), "a grouped, not depthwise, conv"
    assert opsets == set(range(11, 20))


def _wrong_scale(model, factor: float):
    """``model`` with every activation quantizer's scale multiplied by ``factor`` (a miscompiled grid)."""
    from onnx import numpy_helper

    copy = type(model)()
    copy.CopyFrom(model)
    constants = {init.name: init for init in copy.graph.initializer}
    for node in copy.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] not in constants:
            scale = constants[node.input[1]]
            scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * factor, scale.name))
    return copy


def test_the_floor_passes_a_correct_model_and_fails_a_miscompiled_one():
    """The derived floor is not vacuous: a correct compile clears it, a grid 64x coarser does not."""
    from qdq_compiler.ir import load_model, to_proto
    from qdq_compiler.models.fuzz_check import run_session
    from qdq_compiler.pm import PassContext, PassManager

    seed = next(
        s
        for s in range(100)
        if sum(n.op_type == "Conv" for n in random_cnn(RandomChooser(s), CI_FEATURES).model.graph.node) >= 3
    )
    cnn = random_cnn(RandomChooser(seed), CI_FEATURES)
    batches = cnn.calibration_batches(8)
    model = load_model(cnn.model)
    PassManager("trt-int8").run(model, PassContext(calibration_data=batches))
    compiled = to_proto(model)
    reference = run_session(cnn.model, batches[:4], optimized=False)

    def margin(proto) -> float:
        from qdq_compiler.accuracy.numerics import sqnr_db

        floor = sqnr_floor_db(noise_budget(compiled, batches[:4]))  # the grid the compiler chose
        return sqnr_db(reference, run_session(proto, batches[:4], optimized=False)) - floor

    assert margin(compiled) > 0
    assert margin(_wrong_scale(compiled, 64.0)) < 0  # a 64x coarser grid than the floor was derived from


def test_a_failure_names_path_stage_and_has_a_stable_signature():
    first = FuzzFailure("trt-int8", "lint", "3 error(s), first: node conv_12: bad scale\nmore")
    second = FuzzFailure("trt-int8", "lint", "4 error(s), first: node conv_7: bad scale")
    assert str(first) == "[trt-int8] lint: 3 error(s), first: node conv_12: bad scale"
    assert first.signature == second.signature
    assert FuzzFailure("a", "sqnr-x", "1 dB").signature == FuzzFailure("a", "sqnr-x", "-9 dB").signature


def test_noise_gain_measures_cancellation():
    """y = x @ W - x @ (0.9 W) keeps a tenth of the signal, so noise on W grows 100x relative to it;
    y = x @ W passes it unchanged."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)

    def model(cancel: bool) -> onnx.ModelProto:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y" if not cancel else "a"])]
        inits = [numpy_helper.from_array(weight, "w")]
        if cancel:
            nodes += [
                helper.make_node("MatMul", ["x", "w2"], ["b"]),
                helper.make_node("Sub", ["a", "b"], ["y"]),
            ]
            inits.append(numpy_helper.from_array(0.9 * weight, "w2"))
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 8])]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 4])]
        graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])

    batches = [{"x": np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)}]
    assert 0.5 < noise_gain(model(False), batches) < 2.0
    assert 50.0 < noise_gain(model(True), batches) < 200.0

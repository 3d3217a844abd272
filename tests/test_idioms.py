"""The family idioms of models/idioms.py (C2f, SiLU, Focus, SE, HardSwish) through `qdqc compile` (trt-int8,
statistics from random calibration data): the INT8 model stays close to the float one in onnxruntime, and
`qdqc explain` predicts no standalone Q/DQ (reformat layer) but the graph input's Q.

Issue 15 item 4: place-qdq quantizes the residual Add's skip input through the conv's fused activation, lets
a quantized Concat read already-quantized inputs through their DQ, and (int8-mul) ties the SE Mul's inputs,
so every consumer of a tensor reads the same quantized value where TensorRT fuses (docs/placement.md). The
counts before are in each test's docstring.
"""

from __future__ import annotations

import json
from contextlib import redirect_stdout

import numpy as np
import onnx
import pytest

from qdq_compiler.accuracy.numerics import compare_outputs, run_outputs
from qdq_compiler.cli import main
from qdq_compiler.models import TEST_MODELS
from qdq_compiler.pipelines import TRT_INT8

IDIOMS = ("c2f", "silu", "focus", "focus_s2d", "se_block", "hardswish", "hardswish_mul")

# SQNR floors (dB) of the INT8 output against the float model on 8 held-out random inputs. Measured on
# builder seeds 0-4 (seed 0 is tested): c2f 24.5-26.8, silu 28.0-30.2, focus 31.1-32.3, focus_s2d
# 30.6-32.5, se_block 33.2-36.1, hardswish and hardswish_mul 27.2-29.8 (identical: the same function).
# Each floor is the worst seed minus ~3 dB, rounded down: room for calibration noise between seeds, while a
# lost or wrong scale (a Q/DQ pair on the wrong tensor, a tied scale that clips one branch) costs far more.
SQNR_FLOOR_DB = {
    "c2f": 21.0,
    "silu": 25.0,
    "focus": 28.0,
    "focus_s2d": 27.0,
    "se_block": 30.0,
    "hardswish": 24.0,
    "hardswish_mul": 24.0,
}
QUANTIZED_CEILING_DB = 60.0  # above this the model was not really quantized


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compile each idiom model once: name -> (float proto, INT8 proto, explain's JSON)."""
    root = tmp_path_factory.mktemp("idioms")
    calib = root / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32))
    cache: dict[tuple[str, str], tuple[onnx.ModelProto, onnx.ModelProto, dict]] = {}

    def get(name: str, place_options: str = ""):
        """`place_options` (e.g. "int8-mul=false") go to place-qdq in the trt-int8 pipeline."""
        key = (name, place_options)
        if key not in cache:
            stem = f"{name}.{place_options.replace('=', '_')}" if place_options else name
            source, target = root / f"{name}.onnx", root / f"{stem}.int8.onnx"
            onnx.save_model(TEST_MODELS[name](), source)
            pipeline = []
            if place_options:
                pipeline = ["--pipeline", TRT_INT8.replace("place-qdq", f"place-qdq{{{place_options}}}")]
            command = ["-q", "compile", str(source), "--calib", str(calib), *pipeline, "-o", str(target)]
            assert main(command) == 0
            report = root / f"{stem}.explain.json"
            with open(report, "w") as stream, redirect_stdout(stream):
                assert main(["explain", str(target), "--json"]) == 0
            cache[key] = (onnx.load(str(source)), onnx.load(str(target)), json.loads(report.read_text()))
        return cache[key]

    return get


def standalone(explained: dict) -> list[tuple[str, str, str]]:
    """explain's standalone Q/DQ as (kind, node, reason)."""
    return [(r["kind"], r["node"], r["reason"]) for r in explained["reformats"]]


@pytest.mark.parametrize("place_options", ["", "int8-mul=false"])
@pytest.mark.parametrize("name", IDIOMS)
def test_idiom_int8_stays_close_to_float(name, place_options, compiled) -> None:
    model, int8, _ = compiled(name, place_options)
    assert any(node.op_type == "QuantizeLinear" for node in int8.graph.node)
    inputs = np.random.default_rng(1).standard_normal((8, 1, 3, 32, 32)).astype(np.float32)
    batches = [{"input": x} for x in inputs]  # held out: not the calibration data
    sqnr = compare_outputs(run_outputs(model, batches), run_outputs(int8, batches)).sqnr_db
    assert SQNR_FLOOR_DB[name] < sqnr < QUANTIZED_CEILING_DB, f"{name} {place_options}: {sqnr:.2f} dB"


GRAPH_INPUT_Q = ("Q", "input_Q", "quantizes graph input 'input' (expected before the first layer)")


# Baselines measured on this branch (placement of main at 34d067e). Every model has the graph input's Q,
# which TensorRT always runs on its own (nothing produces the input); the others are the idiom's.
def test_c2f_leaves_only_the_input_q(compiled) -> None:
    """1 (was 4): the input Q only. Each bottleneck's residual Add reads its skip input through the same
    Q/DQ as the bottleneck's first conv (the Add fuses into the second conv's SiLU epilogue, placement
    rule 4), so the Split's halves and the Adds' outputs feed only Qs; TensorRT slices the Split per
    output, so those Qs and the Concat output's (moved onto its inputs) fuse into c2f.cv1 and the convs
    before each Add."""
    assert standalone(compiled("c2f")[2]) == [GRAPH_INPUT_Q]


def test_silu_standalone_qdq_baseline(compiled) -> None:
    """1: only the input. Conv-BN-Sigmoid-Mul (x*sigmoid(x)) is predicted to fuse as one INT8 layer."""
    assert standalone(compiled("silu")[2]) == [GRAPH_INPUT_Q]


def test_focus_standalone_qdq_baseline(compiled) -> None:
    """1: the Q after the four stride-2 Slices' Concat quantizes the graph input (Slice and Concat only
    move data), on its own as any input Q is."""
    assert standalone(compiled("focus")[2]) == [
        ("Q", "focus.concat_Q", "quantizes graph input 'input' (expected before the first layer)")
    ]


def test_focus_space_to_depth_quantizes_the_input(compiled) -> None:
    """1: the Q after SpaceToDepth moves onto the graph input (TensorRT imports SpaceToDepth as shuffles,
    which Q crosses), where it runs on its own as any input Q does; before, it was predicted to stay after
    SpaceToDepth as a standalone quantize."""
    assert standalone(compiled("focus_s2d")[2]) == [
        ("Q", "focus.space_to_depth_Q", "quantizes graph input 'input' (expected before the first layer)")
    ]


def test_se_leaves_only_the_input_q(compiled) -> None:
    """1 (was 3): the input Q only. place-qdq's int8-mul (default) makes the SE Mul read the stem's output
    through the Q/DQ GlobalAveragePool reads, and the gate (fc2 + HardSigmoid) through its own Q/DQ, so the
    stem conv and fc2 write INT8 and DQ -> Mul -> Q runs as one INT8 pointwise kernel (Model Optimizer's
    placement of the same block)."""
    assert standalone(compiled("se_block")[2]) == [GRAPH_INPUT_Q]


def test_se_without_int8_mul_keeps_three(compiled) -> None:
    """3 with int8-mul=false (the placement before): the input; the stem's Relu output (read by
    GlobalAveragePool through Q/DQ and by the SE Mul in float, so its Q does not fuse into the stem conv);
    the SE Mul's output before the next conv."""
    assert standalone(compiled("se_block", "int8-mul=false")[2]) == [
        GRAPH_INPUT_Q,
        ("Q", "stem.act_Q", "Relu 'stem.act' produces float here: a standalone quantize"),
        ("Q", "se.mul_Q", "Mul 'se.mul' produces float here: a standalone quantize"),
    ]


@pytest.mark.parametrize("name", ["hardswish", "hardswish_mul"])
def test_hardswish_standalone_qdq_baseline(name, compiled) -> None:
    """1: only the input, for the HardSwish op and for x*HardSigmoid(x) alike."""
    assert standalone(compiled(name)[2]) == [GRAPH_INPUT_Q]

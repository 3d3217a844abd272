"""The family idioms of models/idioms.py (C2f, SiLU, Focus, SE, HardSwish) through `qdqc compile` (trt-int8,
statistics from random calibration data): the INT8 model stays close to the float one in onnxruntime, and
`qdqc explain`'s standalone Q/DQ (reformat layers) are recorded as measured baselines.

The baselines are facts about today's placement, not goals: issue 15 item 4 (tie or place Q/DQ so that every
consumer of a tensor reads the same quantized value where TensorRT fuses) is expected to lower them; a test
here that fails with a LOWER count means that fix landed and the baseline should be updated.
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
    cache: dict[str, tuple[onnx.ModelProto, onnx.ModelProto, dict]] = {}

    def get(name: str):
        if name not in cache:
            source, target = root / f"{name}.onnx", root / f"{name}.int8.onnx"
            onnx.save_model(TEST_MODELS[name](), source)
            assert main(["-q", "compile", str(source), "--calib", str(calib), "-o", str(target)]) == 0
            report = root / f"{name}.explain.json"
            with open(report, "w") as stream, redirect_stdout(stream):
                assert main(["explain", str(target), "--json"]) == 0
            cache[name] = (onnx.load(str(source)), onnx.load(str(target)), json.loads(report.read_text()))
        return cache[name]

    return get


def standalone(explained: dict) -> list[tuple[str, str, str]]:
    """explain's standalone Q/DQ as (kind, node, reason)."""
    return [(r["kind"], r["node"], r["reason"]) for r in explained["reformats"]]


@pytest.mark.parametrize("name", IDIOMS)
def test_idiom_int8_stays_close_to_float(name, compiled) -> None:
    model, int8, _ = compiled(name)
    assert any(node.op_type == "QuantizeLinear" for node in int8.graph.node)
    inputs = np.random.default_rng(1).standard_normal((8, 1, 3, 32, 32)).astype(np.float32)
    batches = [{"input": x} for x in inputs]  # held out: not the calibration data
    sqnr = compare_outputs(run_outputs(model, batches), run_outputs(int8, batches)).sqnr_db
    assert SQNR_FLOOR_DB[name] < sqnr < QUANTIZED_CEILING_DB, f"{name}: {sqnr:.2f} dB"


GRAPH_INPUT_Q = ("Q", "input_Q", "quantizes graph input 'input' (expected before the first layer)")


# Baselines measured on this branch (placement of main at 34d067e). Every model has the graph input's Q,
# which TensorRT always runs on its own (nothing produces the input); the others are the idiom's.
def test_c2f_standalone_qdq_baseline(compiled) -> None:
    """4: the input; the Split's second half (read by the first bottleneck's conv AND, in float, by its
    residual Add: its Q has no producer to fuse into); the first bottleneck's Add output (read by the next
    bottleneck's conv, its Add and the Concat); the Concat's output Q, which TensorRT moves onto the Concat's
    inputs, where the Split's first half arrives in float."""
    found = standalone(compiled("c2f")[2])
    assert found == [
        GRAPH_INPUT_Q,
        ("Q", "c2f.split.out1_Q", "Split 'c2f.split' produces float here: a standalone quantize"),
        ("Q", "c2f.m.0.add_Q", "Add 'c2f.m.0.add' produces float here: a standalone quantize"),
        ("Q", "c2f.concat_Q", "Split 'c2f.split' produces float here: a standalone quantize"),
    ]


def test_silu_standalone_qdq_baseline(compiled) -> None:
    """1: only the input. Conv-BN-Sigmoid-Mul (x*sigmoid(x)) is predicted to fuse as one INT8 layer."""
    assert standalone(compiled("silu")[2]) == [GRAPH_INPUT_Q]


def test_focus_standalone_qdq_baseline(compiled) -> None:
    """1: the Q after the four stride-2 Slices' Concat quantizes the graph input (Slice and Concat only
    move data), on its own as any input Q is."""
    assert standalone(compiled("focus")[2]) == [
        ("Q", "focus.concat_Q", "quantizes graph input 'input' (expected before the first layer)")
    ]


def test_focus_space_to_depth_standalone_qdq_baseline(compiled) -> None:
    """1: the Q after SpaceToDepth, which TensorRT runs in float: a standalone quantize."""
    assert standalone(compiled("focus_s2d")[2]) == [
        (
            "Q",
            "focus.space_to_depth_Q",
            "SpaceToDepth 'focus.space_to_depth' produces float here: a standalone quantize",
        )
    ]


def test_se_standalone_qdq_baseline(compiled) -> None:
    """3: the input; the stem's Relu output (read by GlobalAveragePool and by the SE Mul in float, so its Q
    does not fuse into the stem conv); the SE Mul's output before the next conv."""
    assert standalone(compiled("se_block")[2]) == [
        GRAPH_INPUT_Q,
        ("Q", "stem.act_Q", "Relu 'stem.act' produces float here: a standalone quantize"),
        ("Q", "se.mul_Q", "Mul 'se.mul' produces float here: a standalone quantize"),
    ]


@pytest.mark.parametrize("name", ["hardswish", "hardswish_mul"])
def test_hardswish_standalone_qdq_baseline(name, compiled) -> None:
    """1: only the input, for the HardSwish op and for x*HardSigmoid(x) alike."""
    assert standalone(compiled(name)[2]) == [GRAPH_INPUT_Q]

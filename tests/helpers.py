"""Test helpers: build small models, run them in onnxruntime, compare outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded float inputs for every graph input that is not an initializer."""
    rng = np.random.default_rng(seed)
    initializers = {init.name for init in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def run_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of `model` under onnxruntime on the CPU, graph optimizations off (what we wrote runs)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def max_relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    """max |a - e| / max(|e|) over the tensor (scale-aware, robust to near-zero entries)."""
    denominator = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected)) / denominator)


def graph_model(
    nodes: Sequence[onnx.NodeProto],
    initializers: Mapping[str, np.ndarray],
    input_shape: Sequence[int],
    outputs: Mapping[str, Sequence[int]],
    opset: int = 17,
) -> onnx.ModelProto:
    """A checked model: float input ``x`` of ``input_shape``, the named float ``outputs``, initializers."""
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(dims)) for out, dims in outputs.items()],
        [numpy_helper.from_array(array, name) for name, array in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def concat_of_distant_ranges(ratio: float, channels: int = 8, side: int = 6) -> onnx.ModelProto:
    """x -> conv1 (positive weights) -> a; a -> conv2 (positive, gain ~ratio) -> b; Concat(a, b) -> conv3
    -> conv4 -> y: a scale group whose members' ranges differ by ``ratio``. With ``a`` tied to the Concat's
    scale, conv2 reads zeros and y is all wrong."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.uniform(0.01, 0.1, (channels, channels, 1, 1)),
        "w2": rng.uniform(0.5, 1.5, (channels, channels, 1, 1)) * ratio / channels / 0.25,
        "w3": rng.uniform(-1.0, 1.0, (channels, 2 * channels, 1, 1)) / ratio,
        "w4": rng.uniform(-1.0, 1.0, (channels, channels, 1, 1)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
        helper.make_node("Conv", ["a", "w2"], ["b"], name="conv2"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="concat", axis=1),
        helper.make_node("Conv", ["cat", "w3"], ["d"], name="conv3"),
        helper.make_node("Conv", ["d", "w4"], ["y"], name="conv4"),
    ]
    shape = (1, channels, side, side)
    return graph_model(nodes, {k: v.astype(np.float32) for k, v in weights.items()}, shape, {"y": shape})


def count_name_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the graph-wide name scans (`editing.all_value_names`) a NameScope costs; `[n]`, updated live."""
    from qdq_compiler.ir import editing

    scans = [0]
    original = editing.all_value_names

    def counting(graph: ir.Graph) -> set[str]:
        scans[0] += 1
        return original(graph)

    monkeypatch.setattr(editing, "all_value_names", counting)
    return scans

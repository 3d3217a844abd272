"""Tests for the deterministic test-model builders in ``qdq_compiler.models``."""

from __future__ import annotations

import collections
from functools import cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper, shape_inference

from qdq_compiler.models import TEST_MODELS, build_chain_model, build_resnet_blocks, build_yolov7_tiny

YOLO_MODELS = ["yolov7_tiny", "yolov7_tiny_silu", "yolov7_tiny_clean"]


@cache
def _model(name: str) -> onnx.ModelProto:
    return TEST_MODELS[name]()


def _op_counts(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in model.graph.node)


def _random_input(model: onnx.ModelProto, seed: int = 1234) -> dict[str, np.ndarray]:
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return {inp.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _run_with_conv_outputs(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Run in onnxruntime with every Conv output exposed as an extra graph output."""
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    value_info = {v.name: v for v in inferred.graph.value_info}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {out.name for out in model.graph.output}  # a Conv producing a graph output is there already
    conv_outputs = [
        n.output[0] for n in model.graph.node if n.op_type == "Conv" and n.output[0] not in outputs
    ]
    probe.graph.output.extend(value_info[name] for name in conv_outputs)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, _random_input(model)), strict=True))


def _duplicate_initializers(model: onnx.ModelProto) -> list[list[str]]:
    groups: dict[tuple, list[str]] = collections.defaultdict(list)
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        groups[(a.dtype.str, a.shape, a.tobytes())].append(t.name)
    return [g for g in groups.values() if len(g) > 1]


@pytest.mark.parametrize("name", sorted(TEST_MODELS))
def test_registry_model_is_valid(name: str) -> None:
    model = _model(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    assert model.ir_version == 8
    assert model.producer_name == "qdq_compiler.models"
    assert len(model.graph.value_info) == 0
    node_names = [n.name for n in model.graph.node]
    assert len(set(node_names)) == len(node_names)
    assert all(node_names)


@pytest.mark.parametrize("name", sorted(TEST_MODELS))
def test_registry_model_runs_with_sane_activations(name: str) -> None:
    model = _model(name)
    outputs = _run_with_conv_outputs(model)
    final = outputs[model.graph.output[0].name]
    conv_outs = [v for k, v in outputs.items() if k != model.graph.output[0].name]
    assert conv_outs, "expected intermediate conv outputs"
    for tensor in [final, *conv_outs]:
        assert np.all(np.isfinite(tensor))
        assert 1e-3 < float(tensor.std()) < 1e3
    # Conv activations stay O(1) through the depth, not merely finite.
    assert max(float(v.std()) for v in conv_outs) < 50.0


@pytest.mark.parametrize("name", sorted(TEST_MODELS))
def test_registry_model_is_deterministic(name: str) -> None:
    assert TEST_MODELS[name]().SerializeToString() == _model(name).SerializeToString()


def test_seed_changes_weights() -> None:
    a = build_resnet_blocks(seed=0).SerializeToString()
    b = build_resnet_blocks(seed=1).SerializeToString()
    assert a != b


@pytest.mark.parametrize("name", YOLO_MODELS)
def test_yolo_output_shape(name: str) -> None:
    model = _model(name)
    res, nc = 160, 3
    n = 3 * sum((res // s) ** 2 for s in (8, 16, 32))
    out = model.graph.output[0]
    assert out.name == "output"
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, n, 5 + nc]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, _random_input(model))
    assert y.shape == (1, n, 5 + nc)
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [1, n, 5 + nc]


def test_yolo_custom_size_and_classes() -> None:
    model = build_yolov7_tiny(width=0.125, resolution=96, num_classes=5, seed=3)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, _random_input(model))
    assert y.shape == (1, 3 * (12**2 + 6**2 + 3**2), 10)
    with pytest.raises(ValueError):
        build_yolov7_tiny(resolution=100)


def test_yolo_export_style_contents() -> None:
    model = _model("yolov7_tiny")
    ops = _op_counts(model)
    required = ("BatchNormalization", "Identity", "Dropout", "MaxPool", "Resize", "Concat", "Shape")
    for op in (*required, "LeakyRelu"):
        assert ops[op] > 0, op
    assert ops["Identity"] >= 2
    assert ops["MaxPool"] == 6  # 3 downsampling + SPP 5/9/13
    assert ops["Resize"] == 2
    assert _duplicate_initializers(model)
    # A Reshape whose target shape is Shape -> Gather -> Unsqueeze -> Concat arithmetic.
    producer = {o: n for n in model.graph.node for o in n.output}
    chains = 0
    for n in model.graph.node:
        if n.op_type != "Reshape" or n.input[1] not in producer:
            continue
        cat = producer[n.input[1]]
        assert cat.op_type == "Concat"
        for i in cat.input:
            if i in producer and producer[i].op_type == "Unsqueeze":
                gather = producer[producer[i].input[0]]
                assert gather.op_type == "Gather"
                assert producer[gather.input[0]].op_type == "Shape"
                chains += 1
    assert chains > 0
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute}
    assert attrs == {
        "mode": b"nearest",
        "coordinate_transformation_mode": b"asymmetric",
        "nearest_mode": b"floor",
    }


def test_yolo_clean_has_no_export_noise() -> None:
    model = _model("yolov7_tiny_clean")
    ops = _op_counts(model)
    for op in ("Identity", "Dropout", "Shape", "Gather", "Unsqueeze", "Pow"):
        assert ops[op] == 0, op
    assert not _duplicate_initializers(model)


@pytest.mark.parametrize("name", YOLO_MODELS)
def test_yolo_every_conv_has_bn_except_head(name: str) -> None:
    model = _model(name)
    consumers = collections.defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        if n.name.startswith("detect."):
            assert len(n.input) == 3, n.name  # head output convs carry a bias, no BN
            assert all(c.op_type != "BatchNormalization" for c in consumers[n.output[0]])
        else:
            assert [c.op_type for c in consumers[n.output[0]]] == ["BatchNormalization"], n.name


def test_yolo_activation_variants() -> None:
    leaky, silu = _op_counts(_model("yolov7_tiny")), _op_counts(_model("yolov7_tiny_silu"))
    assert leaky["LeakyRelu"] == leaky["BatchNormalization"] and leaky["Sigmoid"] == 3
    assert silu["LeakyRelu"] == 0 and silu["Sigmoid"] == silu["BatchNormalization"] + 3
    alphas = [
        onnx.helper.get_attribute_value(a)
        for n in _model("yolov7_tiny").graph.node
        if n.op_type == "LeakyRelu"
        for a in n.attribute
    ]
    assert alphas == pytest.approx([0.1] * leaky["LeakyRelu"])


def test_resnet_contents() -> None:
    model = _model("resnet_blocks")
    ops = _op_counts(model)
    assert ops["Add"] == 2 and ops["Gemm"] == 1 and ops["BatchNormalization"] == 6
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert onnx.helper.get_attribute_value(gemm.attribute[0]) == 1  # transB
    assert model.graph.input[0].name == "images"
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]


@pytest.mark.parametrize("num_nodes", [1, 4, 5, 123, 1000])
def test_chain_model_node_count_and_topology(num_nodes: int) -> None:
    model = build_chain_model(num_nodes)
    assert len(model.graph.node) == num_nodes
    onnx.checker.check_model(model)
    if num_nodes >= 10:
        inits = {t.name for t in model.graph.initializer}
        uses = collections.Counter(i for n in model.graph.node for i in n.input if i not in inits)
        assert max(uses.values()) >= 2  # fan-out
        assert any(sum(i not in inits for i in n.input) >= 2 for n in model.graph.node)  # fan-in

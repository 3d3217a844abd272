"""End-to-end PTQ on the test models: valid ONNX, runs in onnxruntime, scale rules hold, accuracy sane."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import run_onnx

from qdq_compiler.examples import image_like_batch
from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.models import build_resnet_blocks, build_yolov7_tiny
from qdq_compiler.pm import PassContext, PassManager

MODELS = {
    "yolov7_tiny": lambda: build_yolov7_tiny(width=0.25, resolution=96),
    "yolov7_tiny_silu": lambda: build_yolov7_tiny(width=0.25, resolution=96, act="silu"),
    "resnet_blocks": lambda: build_resnet_blocks(width=16, resolution=64),
}


def _feeds(proto: onnx.ModelProto, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    images = image_like_batch(count, dims[2], seed=seed)
    return [{proto.graph.input[0].name: images[i : i + 1]} for i in range(count)]


def compile_model(proto: onnx.ModelProto, pipeline: str = "trt-int8") -> onnx.ModelProto:
    model = load_model(proto)
    PassManager(pipeline).run(model, PassContext(calibration_data=_feeds(proto, 8, seed=0)))
    return to_proto(model)


@pytest.fixture(scope="module", params=sorted(MODELS))
def compiled(request):
    proto = MODELS[request.param]()
    return request.param, proto, compile_model(proto)


def _scales_around(graph: onnx.GraphProto, tensor: str) -> list[float]:
    """Scales of the DQ producing `tensor` and of the Qs reading it (written independently of qdqc)."""
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    scales = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and tensor in node.output:
            scales.append(float(initializers[node.input[1]]))
        if node.op_type == "QuantizeLinear" and node.input[0] == tensor:
            scales.append(float(initializers[node.input[1]]))
    return scales


def test_concat_and_maxpool_share_one_scale(compiled) -> None:
    name, _, proto = compiled
    graph = proto.graph
    checked = 0
    for node in graph.node:
        if node.op_type not in ("Concat", "MaxPool"):
            continue
        scales = [s for t in [*node.input, *node.output] for s in _scales_around(graph, t)]
        if len(scales) >= 2:
            checked += 1
            assert len(set(scales)) == 1, (
                f"{name}: {node.op_type} {node.name} has scales {sorted(set(scales))}"
            )
    if name.startswith("yolo"):
        assert checked >= 5, "the YOLO model has quantized Concats and MaxPools to check"


def test_output_is_valid_and_accurate(compiled) -> None:
    name, proto, quantized = compiled
    onnx.checker.check_model(quantized, full_check=True)
    assert [o.name for o in quantized.graph.output] == [o.name for o in proto.graph.output]
    for feeds in _feeds(proto, 2, seed=99):
        reference = run_onnx(proto, feeds)[0].astype(np.float64)
        actual = run_onnx(quantized, feeds)[0].astype(np.float64)
        sqnr = 10 * np.log10(np.sum(reference**2) / np.sum((reference - actual) ** 2))
        # Untrained random networks with 8 calibration samples: a floor that any broken scale or placement
        # falls far below (wrong scales give ~0 dB); bench/bench_ptq.py compares against other tools.
        assert sqnr > 10.0, f"{name}: SQNR {sqnr:.1f} dB"


def test_weights_are_int8_within_symmetric_range(compiled) -> None:
    _, _, quantized = compiled
    int8 = [
        onnx.numpy_helper.to_array(i)
        for i in quantized.graph.initializer
        if i.data_type == onnx.TensorProto.INT8
    ]
    weights = [w for w in int8 if w.ndim >= 2]
    assert weights and all(w.min() >= -127 and w.max() <= 127 for w in weights)
    zero_points = [w for w in int8 if w.ndim <= 1]
    assert all(not z.any() for z in zero_points)


def test_tensor_names_survive_compilation(compiled) -> None:
    """Every activation Q reads a tensor of the float model, so a scale traces back to its float tensor."""
    _, proto, quantized = compiled
    float_names = {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.input}
    for node in quantized.graph.node:
        if node.op_type == "QuantizeLinear":
            assert node.input[0] in float_names, node.input[0]


def test_weights_qdq_form_matches_int8_form() -> None:
    """--weights=qdq (float weights behind Q/DQ) computes the same as INT8 initializers behind DQ."""
    proto = MODELS["resnet_blocks"]()
    folded = compile_model(proto)
    float_weights = compile_model(proto, "prepare,equalize,place-qdq,calibrate,unify-scales,cleanup-qdq")
    feeds = _feeds(proto, 1, seed=5)[0]
    np.testing.assert_allclose(
        run_onnx(folded, feeds)[0], run_onnx(float_weights, feeds)[0], rtol=1e-5, atol=1e-5
    )


def test_head_is_float_unless_asked() -> None:
    proto = build_yolov7_tiny(width=0.25, resolution=64)
    default = compile_model(proto)
    with_head = compile_model(
        proto, "prepare,place-qdq{quantize-head=true},calibrate,unify-scales,fold-scales"
    )

    def quantized_convs(model: onnx.ModelProto) -> set[str]:
        dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        return {n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] in dq_outputs}

    heads = {"detect.0.conv", "detect.1.conv", "detect.2.conv"}
    assert not heads & quantized_convs(default)
    assert heads <= quantized_convs(with_head)


def test_trt11_target_is_fp16_with_float32_io() -> None:
    """Strongly typed output: opset 19, FP16 float remainder and scales, float32 I/O, still accurate."""
    proto = MODELS["yolov7_tiny"]()
    pipeline = "upgrade-opset{min=19},trt-int8,legalize-trt{target=trt11}"
    quantized = compile_model(proto, pipeline)
    onnx.checker.check_model(quantized, full_check=True)
    assert {o.domain: o.version for o in quantized.opset_import}[""] >= 19
    assert quantized.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert quantized.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    float_types = {i.data_type for i in quantized.graph.initializer} - {
        onnx.TensorProto.INT8,
        onnx.TensorProto.INT64,
    }
    assert float_types <= {onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT}
    scale_names = {
        n.input[1] for n in quantized.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
    }
    scales = [i for i in quantized.graph.initializer if i.name in scale_names]
    assert scales and all(i.data_type == onnx.TensorProto.FLOAT16 for i in scales)
    feeds = _feeds(proto, 1, seed=3)[0]
    reference = run_onnx(proto, feeds)[0].astype(np.float64)
    actual = run_onnx(quantized, feeds)[0]
    assert actual.dtype == np.float32
    sqnr = 10 * np.log10(np.sum(reference**2) / np.sum((reference - actual) ** 2))
    assert sqnr > 10.0

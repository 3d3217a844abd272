"""The MAC cost model: multiply-accumulates of each Conv/ConvTranspose/Gemm/MatMul, from tensor shapes.

One home for the count used by ``explain`` (the fusion prediction's INT8 MAC share), sensitivity analysis
and the benches. A symbolic dimension counts as 1 (a dynamic batch is read as batch 1).

- Conv: ``volume(output) * Cin/group * kh * kw`` (the weight's shape without its first axis);
- ConvTranspose: ``volume(input) * Cout/group * kh * kw``;
- Gemm: ``volume(output) * K`` (K from the weight's shape and ``transB``);
- MatMul: ``volume(output) * K`` (the weight's second-to-last axis).
"""

from __future__ import annotations

import contextlib
import math

import onnx
import onnx_ir as ir

from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.external import proto_for_tools
from qdq_compiler.ir.op_facts import gemm_transposes_b
from qdq_compiler.ir.qdq import is_dequantize, is_quantize

Shapes = dict[str, tuple[int | None, ...]]
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

__all__ = [
    "WEIGHTED_OPS",
    "Shapes",
    "conv_output_shape",
    "inferred_shapes",
    "layer_macs",
    "model_shapes",
    "weight_shape",
]


def _dims(shape: ir.Shape) -> tuple[int | None, ...]:
    return tuple([d if isinstance(d, int) else None for d in shape.dims])


def _recorded_shapes(model: ir.Model) -> Shapes | None:
    """Shapes the IR already holds (from infer-shapes) of what the MAC count reads: each weighted layer's
    inputs and output and the Q/DQ chain behind its weight. None when a layer lacks one it needs."""
    shapes: Shapes = {}

    def record(value: ir.Value | None) -> None:
        if value is not None and value.name and value.shape is not None:
            shapes[value.name] = _dims(value.shape)

    for node in model.graph:
        if node.op_type not in WEIGHTED_OPS or not node.outputs:
            continue
        for value in (*node.inputs[:2], node.outputs[0]):  # the bias never counts
            record(value)
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        producer = weight.producer() if weight is not None else None
        while producer is not None and (is_dequantize(producer) or is_quantize(producer)):
            record(producer.inputs[0])
            producer = producer.inputs[0].producer() if producer.inputs[0] is not None else None
        needed = node.inputs[0] if node.op_type == "ConvTranspose" else node.outputs[0]
        if needed is None or (needed.name or "") not in shapes:
            return None
    return shapes


def model_shapes(model: ir.Model) -> Shapes:
    """Shapes for the MAC count: those recorded in the IR when they cover every weighted layer, else
    :func:`inferred_shapes` (ONNX shape inference on a serialized copy: the slow path on big graphs).
    """
    recorded = _recorded_shapes(model)
    return recorded if recorded is not None else inferred_shapes(model)


def inferred_shapes(model: ir.Model) -> Shapes:
    """Shapes of every tensor ONNX shape inference derives (run on a proto copy; the model is untouched)."""
    proto = proto_for_tools(model)
    # Best effort: MACs become unknown where shapes are missing.
    with contextlib.suppress(Exception):
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes: Shapes = {}
    infos = list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output)
    for info in infos:
        tensor_type = info.type.tensor_type
        if info.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            dims = tensor_type.shape.dim
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    for init in proto.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def weight_shape(node: ir.Node, index: int, shapes: Shapes) -> tuple[int | None, ...] | None:
    """Shape of input ``index`` of ``node``, followed back through Q/DQ to the constant behind them."""
    value = node.inputs[index] if index < len(node.inputs) else None
    while value is not None:
        if value.name in shapes:
            return shapes[value.name]
        array = constant_array(value)
        if array is not None:
            return array.shape
        producer = value.producer()
        if producer is None or not (is_dequantize(producer) or is_quantize(producer)):
            return None
        value = producer.inputs[0]
    return None


def _volume(shape: tuple | None) -> int | None:
    if shape is None:
        return None
    return math.prod(d if isinstance(d, int) and d > 0 else 1 for d in shape)  # symbolic dims count as 1


def conv_output_shape(node: ir.Node, shapes: Shapes) -> tuple[int, ...] | None:
    """A Conv's output shape from its input shape, weight shape and attributes (None if any is unknown).

    For graphs where shape inference left the output unknown but the input is known.
    """
    data = node.inputs[0]
    x = shapes.get(data.name or "") if data is not None else None
    weight = weight_shape(node, 1, shapes)
    if x is None or weight is None or any(not isinstance(d, int) for d in (*x, *weight)):
        return None
    x_dims, w_dims = [int(d or 0) for d in x], [int(d or 0) for d in weight]

    def ints(name: str, default: list[int]) -> list[int]:
        attr = node.attributes.get(name)
        return list(attr.as_ints()) if attr is not None else default

    kernel = ints("kernel_shape", w_dims[2:])
    rank = len(kernel)
    strides, dilations = ints("strides", [1] * rank), ints("dilations", [1] * rank)
    pads = ints("pads", [0] * 2 * rank)
    auto_attr = node.attributes.get("auto_pad")
    auto_pad = auto_attr.as_string() if auto_attr is not None else "NOTSET"
    spatial = []
    for i in range(rank):
        size = x_dims[2 + i]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            spatial.append(math.ceil(size / strides[i]))
        else:
            extent = dilations[i] * (kernel[i] - 1) + 1
            pad = 0 if auto_pad == "VALID" else pads[i] + pads[i + rank]
            spatial.append((size + pad - extent) // strides[i] + 1)
    return (x_dims[0], w_dims[0], *spatial)


def layer_macs(node: ir.Node, shapes: Shapes, derive_conv_output: bool = False) -> int | None:
    """Multiply-accumulates of one Conv/ConvTranspose/Gemm/MatMul (symbolic batch counted as 1).

    None when a needed shape is unknown; ``derive_conv_output`` computes a Conv's missing output shape
    from its input (:func:`conv_output_shape`) instead.
    """
    weight = weight_shape(node, 1, shapes)
    out = shapes.get(node.outputs[0].name or "")
    if weight is None:
        return None
    if node.op_type == "Conv" and out is None and derive_conv_output:
        out = conv_output_shape(node, shapes)
    if node.op_type == "Conv" and out is not None:
        return _volume(out) * math.prod(weight[1:])  # type: ignore[operator,arg-type]
    if node.op_type == "ConvTranspose":
        data = shapes.get(node.inputs[0].name or "") if node.inputs[0] is not None else None
        return None if data is None else _volume(data) * math.prod(weight[1:])  # type: ignore[operator,arg-type]
    if node.op_type == "Gemm" and out is not None and len(weight) == 2:
        k = weight[1] if gemm_transposes_b(node) else weight[0]
        return _volume(out) * k  # type: ignore[operator]
    if node.op_type == "MatMul" and out is not None and len(weight) >= 2:
        return _volume(out) * weight[-2]  # type: ignore[operator]
    return None

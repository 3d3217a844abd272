"""ONNX operator facts: what the ONNX spec says about the ops qdqc reads, in one place.

Which input of Conv/ConvTranspose/Gemm/MatMul is the weight and which axis of it holds the output channels
(Gemm's ``transB``), the default axis of QuantizeLinear/DequantizeLinear, which Q/DQ carry a constant
(weights) rather than an activation, element types, and how a node is named in messages. Nothing here is
TensorRT policy (that is ``qdq_compiler.targets.trt_rules``) and nothing here edits a graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard

import onnx_ir as ir

if TYPE_CHECKING:
    import onnx

from qdq_compiler.ir.editing import is_constant

__all__ = [
    "DEFAULT_QDQ_AXIS",
    "FLOAT16_QDQ_MIN_OPSET",
    "FLOAT16_TYPES",
    "FP8_MIN_OPSET",
    "FP8_TYPES",
    "INT8_MIN_OPSET",
    "PER_CHANNEL_MIN_OPSET",
    "default_opset",
    "DEQUANTIZE",
    "QUANTIZE",
    "WEIGHTED_OPS",
    "WeightedOp",
    "gemm_transposes_a",
    "gemm_transposes_b",
    "is_activation_quantizer",
    "is_dequantize",
    "is_quantize",
    "is_weight_qdq",
    "is_weight_quantizer",
    "describe_node",
    "describe_node_proto",
    "node_label",
    "qdq_axis",
    "quantized_type",
    "value_dtype",
    "weight_channels",
    "weighted_op",
]


def default_opset(opset_imports: Mapping[str, int], missing: int = 0) -> int:
    """The ONNX (default-domain) opset: the entry for "" or its alias "ai.onnx"; `missing` when neither."""
    return int(opset_imports.get("", opset_imports.get("ai.onnx", missing)))


QUANTIZE = "QuantizeLinear"
DEQUANTIZE = "DequantizeLinear"
# Ops whose output is a gate in [0, 1] multiplied onto a feature map: SiLU and HardSwish (x * gate(x)),
# squeeze-excitation (x * gate(fc(pool(x))))
GATE_OPS = ("Sigmoid", "HardSigmoid")


def is_onnx_op(node: ir.Node | None, *op_types: str) -> TypeGuard[ir.Node]:
    """True for a node of the default ONNX domain whose op type is one of ``op_types``."""
    return node is not None and node.op_type in op_types and node.domain in ("", "ai.onnx")


def is_quantize(node: ir.Node | None) -> TypeGuard[ir.Node]:
    """True for an ONNX QuantizeLinear node."""
    return is_onnx_op(node, QUANTIZE)


def is_dequantize(node: ir.Node | None) -> TypeGuard[ir.Node]:
    """True for an ONNX DequantizeLinear node."""
    return is_onnx_op(node, DEQUANTIZE)


# The ONNX opset each Q/DQ feature needs, and the float types they concern.
INT8_MIN_OPSET = 10  # per-tensor QuantizeLinear/DequantizeLinear exist from opset 10
PER_CHANNEL_MIN_OPSET = 13  # the `axis` attribute arrives in opset 13
FP8_MIN_OPSET = 19  # FLOAT8 types in Q/DQ arrive in opset 19
FLOAT16_QDQ_MIN_OPSET = 19  # float16/bfloat16 Q input, scale, DQ output arrive in opset 19 (13-18: float32)
FLOAT16_TYPES = frozenset({ir.DataType.FLOAT16, ir.DataType.BFLOAT16})
FP8_TYPES = frozenset(
    {ir.DataType.FLOAT8E4M3FN, ir.DataType.FLOAT8E4M3FNUZ, ir.DataType.FLOAT8E5M2, ir.DataType.FLOAT8E5M2FNUZ}
)

# QuantizeLinear/DequantizeLinear `axis` when the attribute is absent (ONNX opset 13+)
DEFAULT_QDQ_AXIS = 1


def qdq_axis(node: ir.Node) -> int:
    """The `axis` attribute of a Q or DQ node as written (may be negative), or the ONNX default 1."""
    attr = node.attributes.get("axis")
    return attr.as_int() if attr is not None else DEFAULT_QDQ_AXIS


def _flag(node: ir.Node, name: str) -> bool:
    attr = node.attributes.get(name)
    return attr is not None and bool(attr.as_int())


def gemm_transposes_a(node: ir.Node) -> bool:
    """True when a Gemm reads A transposed (``transA=1``; A is [K, M])."""
    return _flag(node, "transA")


def gemm_transposes_b(node: ir.Node) -> bool:
    """True when a Gemm reads B transposed (``transB=1``; B is [N, K], output channels on axis 0)."""
    return _flag(node, "transB")


@dataclass(frozen=True)
class WeightedOp:
    """A linear op with a weight input: where its activation, weight and bias inputs are."""

    op_type: str
    activation_input: int
    weight_input: int
    bias_input: int | None
    axis_text: str  # the output-channel axis of the weight, in words (for messages and docs)

    def output_channel_axis(self, node: ir.Node, weight_rank: int | None) -> int | None:
        """The axis of `node`'s weight that holds its output channels (None when it cannot be told)."""
        if self.op_type == "Conv":
            return 0
        if self.op_type == "ConvTranspose":
            return 1
        if self.op_type == "Gemm":
            return 0 if gemm_transposes_b(node) else 1
        if self.op_type == "MatMul":
            return None if weight_rank is None else weight_rank - 1
        return None


WEIGHTED_OPS: dict[str, WeightedOp] = {
    op.op_type: op
    for op in (
        WeightedOp("Conv", 0, 1, 2, "axis 0 (output channels of W[M, C/g, k...])"),
        WeightedOp("ConvTranspose", 0, 1, 2, "axis 1 (output channels of W[C, M/g, k...])"),
        WeightedOp("Gemm", 0, 1, 2, "axis 0 if transB=1 (B[N, K]), else axis 1 (B[K, N])"),
        WeightedOp("MatMul", 0, 1, None, "last axis of a constant B[..., K, N]"),
    )
}


def weighted_op(node: ir.Node) -> WeightedOp | None:
    """The weighted-op facts of an ONNX Conv/ConvTranspose/Gemm/MatMul node, else None."""
    return WEIGHTED_OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None


def weight_channels(node: ir.Node, dims: tuple) -> tuple[int, int]:
    """(input channels per group, output channels) of a weighted op, from its weight's dims.

    Conv W[M, C/g, k...]; ConvTranspose W[C, M/g, k...]; Gemm B[K, N] (B[N, K] with transB);
    MatMul B[..., K, N] (a vector B[K] gives one output channel).
    """
    if node.op_type == "Conv":
        return int(dims[1]), int(dims[0])
    if node.op_type == "ConvTranspose":
        group = node.attributes.get("group")
        return int(dims[0]), int(dims[1]) * (group.as_int() if group is not None else 1)
    if node.op_type == "Gemm":
        if gemm_transposes_b(node):
            return int(dims[1]), int(dims[0])
        return int(dims[0]), int(dims[1])
    return (int(dims[-2]), int(dims[-1])) if len(dims) >= 2 else (int(dims[0]), 1)


def node_label(node: ir.Node) -> str:
    """The node's name, or `OpType(first output)` for unnamed nodes."""
    if node.name:
        return node.name
    output = node.outputs[0].name if node.outputs else None
    return f"{node.op_type}({output or '?'})"


def _node_phrase(op_type: str, name: str, output: str) -> str:
    """How a message names a node: ``Conv 'stem'``, or ``Conv (output 'x')`` when it has no name."""
    if name:
        return f"{op_type} {name!r}"
    return f"{op_type} (output {output!r})" if output else f"{op_type} (unnamed)"


def describe_node(node: ir.Node) -> str:
    """The node as error and warning messages name it: op type, then its name or its first output."""
    output = node.outputs[0].name if node.outputs else ""
    return _node_phrase(node.op_type, node.name or "", output or "")


def describe_node_proto(node: onnx.NodeProto) -> str:
    """``describe_node`` for a NodeProto (checks that run before the model becomes IR)."""
    return _node_phrase(node.op_type, node.name, node.output[0] if node.output else "")


def is_weight_qdq(node: ir.Node) -> bool:
    """True for a Q/DQ of a constant: INT8 initializer -> DQ, or float constant -> Q -> DQ."""
    data = node.inputs[0]
    if data is None:
        return False
    if data.const_value is not None and not data.is_graph_input():
        return True
    producer = data.producer()
    if producer is None:
        return False
    if producer.op_type == "Constant":
        return True
    return is_dequantize(node) and is_quantize(producer) and is_weight_qdq(producer)


def is_weight_quantizer(node: ir.Node | None) -> TypeGuard[ir.Node]:
    """True for a QuantizeLinear of a constant (a weight still in float, before fold-scales)."""
    return is_quantize(node) and is_constant(node.inputs[0])


def is_activation_quantizer(node: ir.Node | None) -> TypeGuard[ir.Node]:
    """True for a QuantizeLinear whose input is computed (an activation), not a constant."""
    return is_quantize(node) and node.inputs[0] is not None and not is_constant(node.inputs[0])


def value_dtype(value: ir.Value | None) -> ir.DataType | None:
    """Element type of a value: constant tensor dtype, declared type, or the producing Q's quantized type."""
    if value is None:
        return None
    if value.const_value is not None and not value.is_graph_input():
        return value.const_value.dtype
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant":
        attr = producer.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR:
            return attr.as_tensor().dtype
    if value.dtype is not None:
        return value.dtype
    if is_quantize(producer):
        return quantized_type(producer)
    return None


def quantized_type(node: ir.Node) -> ir.DataType | None:
    """The integer/FP8 type a Q produces or a DQ consumes (None when it cannot be told).

    ONNX: the zero-point's type, else a Q's ``output_dtype``, else UINT8 (the default without a zero-point).
    """
    zp_value = node.inputs[2] if len(node.inputs) > 2 else None
    if zp_value is not None:
        dtype = value_dtype(zp_value)
        if dtype is not None:
            return dtype
    if is_quantize(node):
        attr = node.attributes.get("output_dtype")
        if attr is not None and attr.as_int():
            return ir.DataType(attr.as_int())
        return ir.DataType.UINT8
    return value_dtype(node.inputs[0])

"""Lint any Q/DQ ONNX model (ours, another tool's, a QAT export) against TensorRT's import rules.

`lint_model` returns data (a list of `Violation`); `format_violations` renders one line per violation.
The rules and their sources are listed in `RULES` and explained in docs/tensorrt-rules.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_ir as ir

from qdq_compiler.collector import collector_paused
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import op_facts
from qdq_compiler.ir.analysis import all_nodes
from qdq_compiler.ir.op_facts import (
    default_opset,
    is_weight_qdq,
    node_label,
    qdq_axis,
    quantized_type,
)
from qdq_compiler.ir.qdq import DEQUANTIZE, QUANTIZE, is_dequantize, is_quantize
from qdq_compiler.quant.grid import INT8_WEIGHT_RANGE
from qdq_compiler.targets import trt_rules as rules
from qdq_compiler.targets.constant_arrays import ConstantArrays, constant_dtype
from qdq_compiler.targets.recipe import read_recipe

Severity = Literal["error", "warning"]

# rule id -> what it checks (the same ids appear in Violation.rule and in docs/tensorrt-rules.md)
RULES: dict[str, str] = {
    "qoperator-op": "QOperator/integer ops (QLinearConv, ConvInteger, ...): TensorRT imports Q/DQ only",
    "contrib-qdq": "QuantizeLinear/DequantizeLinear from a non-ONNX domain (com.microsoft)",
    "opset": "Q/DQ need opset >= 13 for per-channel axis (per-tensor below 13 is a warning)",
    "zero-point": "zero-points must be constant 0 (symmetric quantization)",
    "quant-type": "quantized type must be INT8 (FP8 only at opset >= 19; UINT8 and INT32 are errors)",
    "scale-constant": "scales must be constants (initializers or Constant nodes)",
    "scale-value": "scales must be finite and strictly positive",
    "scale-dtype": "scales must be float32 (float16: a warning unless the model records target trt11, "
    "which TensorRT builds strongly typed only)",
    "axis": "the Q/DQ axis must be in range and match the scale length",
    "per-channel-activation": "per-channel scales only on constant weights, never on activations",
    "weight-axis": "per-channel weight axis must match the consumer (Conv 0, ConvTranspose 1, Gemm, MatMul)",
    "bias-quantized": "Conv/ConvTranspose/Gemm bias must stay float (no DQ on the bias input)",
    "q-without-dq": "every QuantizeLinear output must feed DequantizeLinear nodes only",
    "weight-range": "INT8 weight initializers behind a DQ must lie in [-127, 127]",
    "float16-qdq": "float16/bfloat16 Q/DQ (input, scale or output) need opset >= 19 (13-18 are float32 only)",
    "bias-overflow": "Conv/ConvTranspose/Gemm bias / (activation scale x weight scale) must fit in INT32",
}


@dataclass(frozen=True)
class Violation:
    """One broken rule at one node."""

    severity: Severity
    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity:<7} {self.node}: [{self.rule}] {self.message}"


def _error(rule: str, node: str, message: str) -> Violation:
    return Violation("error", rule, node, message)


def _warning(rule: str, node: str, message: str) -> Violation:
    return Violation("warning", rule, node, message)


class TrtLintError(QdqcError):
    """The model breaks TensorRT's Q/DQ rules (raised by the verify-trt pass)."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        errors = sum(1 for v in violations if v.severity == "error")
        head = "; ".join(f"{v.node}: [{v.rule}] {v.message}" for v in violations[:5])
        more = f" (+{len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(
            f"TensorRT lint failed ({errors} error(s), {len(violations) - errors} warning(s)): {head}{more}"
        )


def lint_model(model: ir.Model, constants: ConstantArrays | None = None) -> list[Violation]:
    """Check every node of `model` against TensorRT's Q/DQ rules; errors first, then warnings.

    The target the model records (targets/recipe.py) decides the build mode: a trt11 model is built strongly
    typed, so float16 scales are fine; any other model may meet a weakly typed TensorRT 10 build. Pass
    `constants` to share decoded constants with other work on the same, unchanged model (`qdqc explain`).
    """
    with collector_paused():
        return _lint(model, constants if constants is not None else ConstantArrays())


def _lint(model: ir.Model, constants: ConstantArrays) -> list[Violation]:
    opset = onnx_opset(model)
    strongly_typed = read_recipe(model).strongly_typed_only
    found: list[Violation] = []
    has_qdq = False
    per_channel_below_13 = False
    for node in all_nodes(model.graph):
        op_type = node.op_type
        if op_type in rules.QOPERATOR_OPS:
            found.append(
                _error(
                    "qoperator-op",
                    node_label(node),
                    f"{op_type} is a QOperator-format op; TensorRT imports only Q/DQ",
                )
            )
        if op_type in (QUANTIZE, DEQUANTIZE):  # a Q/DQ is no weighted op: its checks are all it gets
            if node.domain not in ("", "ai.onnx"):
                message = f"{op_type} of domain '{node.domain}' is not the ONNX op TensorRT parses"
                found.append(_error("contrib-qdq", node_label(node), message))
                continue
            has_qdq = True
            node_found = _check_qdq(node, opset, strongly_typed, constants)
            per_channel_below_13 |= any(v.rule == "opset" for v in node_found)
            found.extend(node_found)
            continue
        rule = rules.weighted_rule(node)
        if rule is not None:
            found.extend(_check_bias(node, rule))
            found.extend(_check_bias_overflow(node, rule, constants))
    if has_qdq and opset < op_facts.PER_CHANNEL_MIN_OPSET and not per_channel_below_13:
        found.append(
            _warning(
                "opset", "<model>", f"opset {opset} < 13: re-export at opset 13 or later for TensorRT Q/DQ"
            )
        )
    return sorted(found, key=lambda v: v.severity != "error")


def format_violations(violations: Iterable[Violation]) -> str:
    """One line per violation naming the node, then a count line."""
    items = list(violations)
    errors = sum(1 for v in items if v.severity == "error")
    warnings = len(items) - errors
    lines = [str(v) for v in items]
    lines.append(
        f"TensorRT lint: {errors} error(s), {warnings} warning(s)"
        if items
        else "TensorRT lint: no violations"
    )
    return "\n".join(lines)


def onnx_opset(model: ir.Model) -> int:
    """The default-domain opset of the model (0 when absent)."""
    return default_opset(model.opset_imports or model.graph.opset_imports)


# ----------------------------------------------------------------------------------------------------
# Q/DQ node checks
# ----------------------------------------------------------------------------------------------------


def _check_qdq(node: ir.Node, opset: int, strongly_typed: bool, constants: ConstantArrays) -> list[Violation]:
    label = node_label(node)
    found: list[Violation] = []
    scale_value = node.inputs[1] if len(node.inputs) > 1 else None
    scale = constants.array(scale_value)
    scale_type = constant_dtype(scale_value)
    float_type = _float_side_type(node)
    if scale is None:
        found.append(
            _error("scale-constant", label, "scale is not a constant; TensorRT needs build-time scales")
        )
    else:
        found.extend(_check_scale(label, scale, scale_type, float_type, strongly_typed))
    found.extend(_check_float16_opset(node, label, opset, float_type, scale_type))
    found.extend(_check_zero_point(node, label, constants))
    found.extend(_check_type(node, label, opset))
    if is_quantize(node):
        found.extend(_check_q_feeds_dq(node, label))
    else:
        found.extend(_check_weight_range(node, label, constants))
    if scale is not None and scale.size > 1:
        found.extend(_check_per_channel(node, label, scale, opset, constants))
    return found


def _check_scale(
    label: str,
    scale: np.ndarray,
    dtype: ir.DataType | None,
    float_type: ir.DataType | None = None,
    strongly_typed: bool = False,
) -> list[Violation]:
    found: list[Violation] = []
    if dtype == ir.DataType.FLOAT16 and float_type == ir.DataType.FLOAT16:
        pass  # a float16 tensor's Q/DQ: ONNX (opset 19) and TensorRT's Quantize want the scale in its type
    elif dtype == ir.DataType.FLOAT16 and strongly_typed:
        pass  # the model records target trt11: TensorRT 11 builds are always strongly typed
    elif dtype == ir.DataType.FLOAT16:
        found.append(
            _warning(
                "scale-dtype",
                label,
                "float16 scale: accepted only by strongly typed builds (the model records no "
                "trt11 target); use float32",
            )
        )
    elif dtype is not None and dtype != ir.DataType.FLOAT:
        found.append(_error("scale-dtype", label, f"scale dtype {dtype.name}; TensorRT expects float32"))
    if scale.size == 0:
        return found
    lowest = _smallest(scale)  # NaN when any value is NaN
    highest = float(scale.max()) if scale.size > 1 else lowest
    if not (math.isfinite(lowest) and math.isfinite(highest)):
        found.append(_error("scale-value", label, "scale holds NaN or infinity"))
    elif lowest <= 0:
        found.append(_error("scale-value", label, f"scale must be > 0 (min {lowest:.6g})"))
    return found


def _smallest(array: np.ndarray) -> float:
    """The smallest value as a Python float (NaN if any is NaN); a one-value array without numpy's
    reduction machinery, which costs more than the check itself on the scalars most scales are."""
    return float(array.reshape(-1)[0]) if array.size == 1 else float(array.min())


def _float_side_type(node: ir.Node) -> ir.DataType | None:
    """The float type a Q reads or a DQ writes (None when not declared)."""
    if is_quantize(node):
        return constant_dtype(node.inputs[0]) if node.inputs and node.inputs[0] is not None else None
    return node.outputs[0].dtype if node.outputs else None


def _check_float16_opset(
    node: ir.Node, label: str, opset: int, float_type: ir.DataType | None, scale_type: ir.DataType | None
) -> list[Violation]:
    """float16/bfloat16 Q/DQ below opset 19, or a scale of another type than the tensor: invalid ONNX."""
    found = sorted({t.name for t in (float_type, scale_type) if t in op_facts.FLOAT16_TYPES})
    if not found:
        return []
    if opset >= op_facts.FLOAT16_QDQ_MIN_OPSET:
        if float_type is None or scale_type is None or float_type == scale_type:
            return []
        side = "input" if is_quantize(node) else "output"
        return [
            _error(
                "float16-qdq",
                label,
                f"{node.op_type} {side} is {float_type.name} but its scale is {scale_type.name}; "
                "from opset 19 ONNX wants both in one type",
            )
        ]
    return [
        _error(
            "float16-qdq",
            label,
            f"{node.op_type} on {'/'.join(found)} needs opset >= {op_facts.FLOAT16_QDQ_MIN_OPSET} "
            f"(model has {opset}; opsets 13-18 take float32 only): run upgrade-opset{{min=19}}",
        )
    ]


def _check_zero_point(node: ir.Node, label: str, constants: ConstantArrays) -> list[Violation]:
    zp_value = node.inputs[2] if len(node.inputs) > 2 else None
    if zp_value is None:
        return []
    zero_point = constants.array(zp_value)
    if zero_point is None:
        return [_error("zero-point", label, "zero-point is not a constant")]
    nonzero = np.count_nonzero(zero_point)
    if nonzero:
        return [
            _error("zero-point", label, f"{nonzero} non-zero zero-point value(s); TensorRT is symmetric-only")
        ]
    return []


def _check_type(node: ir.Node, label: str, opset: int) -> list[Violation]:
    qtype = quantized_type(node)
    if qtype is None or qtype == ir.DataType.INT8:
        return []
    if qtype == ir.DataType.UINT8:
        why = " (no zero-point nor output_dtype: ONNX defaults to uint8)" if _defaults_to_uint8(node) else ""
        return [_error("quant-type", label, f"UINT8 quantization{why}; TensorRT needs INT8")]
    if qtype in op_facts.FP8_TYPES:
        if opset >= op_facts.FP8_MIN_OPSET:
            return []
        return [_error("quant-type", label, f"{qtype.name} needs opset >= 19 (model has {opset})")]
    if qtype == ir.DataType.INT32 and is_dequantize(node):
        if _feeds_bias_only(node):
            return []  # reported once, on the layer, by the bias-quantized rule
        return [
            _error(
                "quant-type",
                label,
                "INT32 dequantize (a quantized bias?): TensorRT dequantizes INT8/FP8; keep it float",
            )
        ]
    return [
        _warning(
            "quant-type", label, f"{qtype.name} quantization is not part of an INT8 CNN plan for TensorRT"
        )
    ]


def _check_q_feeds_dq(node: ir.Node, label: str) -> list[Violation]:
    output = node.outputs[0]
    found: list[Violation] = []
    if output.is_graph_output():
        found.append(
            _error(
                "q-without-dq",
                label,
                f"quantized tensor '{output.name}' is a graph output; add a DequantizeLinear",
            )
        )
    others = sorted({node_label(user) for user, _ in output.uses() if not is_dequantize(user)})
    if others:
        found.append(
            _error(
                "q-without-dq",
                label,
                f"quantized tensor feeds {', '.join(others)} instead of a DequantizeLinear",
            )
        )
    return found


def _check_weight_range(node: ir.Node, label: str, constants: ConstantArrays) -> list[Violation]:
    data = node.inputs[0]
    if data is None or constant_dtype(data) != ir.DataType.INT8:
        return []
    array = constants.array(data)
    if array is None:
        return []
    low = int(np.count_nonzero(array < INT8_WEIGHT_RANGE[0]))
    if not low:
        return []
    return [
        _error(
            "weight-range",
            label,
            f"INT8 constant '{data.name}' holds {low} value(s) of -128; TensorRT weights are "
            "symmetric [-127, 127]",
        )
    ]


def _check_per_channel(
    node: ir.Node, label: str, scale: np.ndarray, opset: int, constants: ConstantArrays
) -> list[Violation]:
    found: list[Violation] = []
    if opset < op_facts.PER_CHANNEL_MIN_OPSET:
        found.append(
            _error("opset", label, f"per-channel scale needs opset >= 13 for `axis` (model has {opset})")
        )
    if node.attributes.get("block_size") is not None and node.attributes["block_size"].as_int() > 0:
        found.append(_warning("axis", label, "blocked quantization (block_size) is for INT4 weights"))
        return found
    axis = qdq_axis(node)
    shape = _data_shape(node, constants)
    if scale.ndim != 1:
        found.append(_error("axis", label, f"per-channel scale must be 1-D, got shape {scale.shape}"))
    if shape is not None:
        rank = len(shape)
        if not -rank <= axis < rank:
            found.append(_error("axis", label, f"axis {axis} is out of range for rank {rank}"))
            return found
        axis %= rank
        dim = shape[axis]
        if isinstance(dim, int) and dim != scale.size:
            found.append(
                _error("axis", label, f"scale has {scale.size} values but axis {axis} has {dim} channels")
            )
    if not is_weight_qdq(node):
        found.append(
            _error(
                "per-channel-activation",
                label,
                "per-channel scale on an activation; TensorRT wants per-tensor activations",
            )
        )
        return found
    weight_rank = len(shape) if shape is not None else None
    consumers = _weighted_consumers(node)
    if not consumers and not _feeds_bias_only(node):
        found.append(
            _warning(
                "per-channel-activation",
                label,
                "per-channel scale on a constant that is no Conv/Gemm/MatMul weight",
            )
        )
    for user, rule in consumers:
        expected = rule.weight_axis(user, weight_rank)
        if expected is not None and weight_rank is not None and axis % weight_rank != expected:
            found.append(
                _error(
                    "weight-axis",
                    label,
                    f"weight of {user.op_type} '{node_label(user)}' is quantized on axis {axis}; "
                    f"expected {rule.axis_rule}",
                )
            )
    return found


def _check_bias(node: ir.Node, rule: rules.WeightedOpRule) -> list[Violation]:
    if rule.bias_input is None or len(node.inputs) <= rule.bias_input:
        return []
    bias = node.inputs[rule.bias_input]
    producer = bias.producer() if bias is not None else None
    if bias is None or not is_dequantize(producer):
        return []
    return [
        _error(
            "bias-quantized",
            node_label(node),
            f"bias '{bias.name}' comes through DequantizeLinear '{node_label(producer)}'; "
            "TensorRT wants a float bias",
        )
    ]


def _check_bias_overflow(
    node: ir.Node, rule: rules.WeightedOpRule, constants: ConstantArrays
) -> list[Violation]:
    """A float bias that overflows INT32 when folded into the accumulator as bias / (s_in * s_w)."""
    if rule.bias_input is None or len(node.inputs) <= rule.bias_input:
        return []
    bias = constants.array(node.inputs[rule.bias_input])
    s_in = _dequantize_scale(node.inputs[rule.activation_input], constants)
    s_w = _dequantize_scale(node.inputs[rule.weight_input], constants)
    if bias is None or s_in is None or s_w is None or s_in.size != 1 or bias.dtype.kind != "f":
        return []
    if 1 not in (bias.size, s_w.size) and bias.size != s_w.size:
        return []  # the axis / weight-axis rules report a scale that does not match the output channels
    activation_scale = float(s_in.reshape(-1)[0])
    if _fits_int32(bias, activation_scale, s_w):
        return []
    bias = np.abs(bias.astype(np.float64).reshape(-1))
    s_w = s_w.astype(np.float64).reshape(-1)  # per output channel, or one
    bias, s_w = np.broadcast_arrays(bias, s_w)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # a zero scale: scale-value's job
        folded = bias / (activation_scale * s_w)
    channels = np.flatnonzero(folded > rules.INT32_MAX)
    if not channels.size:
        return []
    worst = int(channels[np.argmax(folded[channels])])
    listed = ", ".join(str(c) for c in channels[:5]) + (", ..." if channels.size > 5 else "")
    plural = "s" if channels.size > 1 else ""
    return [
        _error(
            "bias-overflow",
            node_label(node),
            f"bias / (activation scale x weight scale) exceeds INT32 in channel{plural} {listed} "
            f"(channel {worst}: {bias[worst]:.3g} / ({activation_scale:.3g} x {s_w[worst]:.3g}) = "
            f"{folded[worst]:.3g}); a consumer that folds the bias into the INT32 accumulator overflows: "
            "check the scales (calibration data of zeros?) or keep the layer float (--exclude)",
        )
    ]


def _fits_int32(bias: np.ndarray, activation_scale: float, s_w: np.ndarray) -> bool:
    """True when no channel's folded bias can exceed INT32, from the largest |bias| over the smallest scale
    product (float64 products and quotients are monotone, so this bound is at least every channel's
    value). False when that bound says nothing (empty, zero, negative or NaN scales): check per channel.
    The extremes are taken in the arrays' own float type: converting to float64 is exact and monotone,
    so they are those of the float64 values, without converting every channel first."""
    if not bias.size or not s_w.size:
        return False
    product = activation_scale * float(s_w.min())
    return product > 0 and float(np.abs(bias).max()) / product <= rules.INT32_MAX


def _dequantize_scale(value: ir.Value | None, constants: ConstantArrays) -> np.ndarray | None:
    """The constant scale of the DequantizeLinear producing `value` (None when there is none)."""
    producer = value.producer() if value is not None else None
    if not is_dequantize(producer) or len(producer.inputs) < 2:
        return None
    return constants.array(producer.inputs[1])


# ----------------------------------------------------------------------------------------------------
# Helpers of the checks above (ONNX facts such as node_label and value_dtype: qdq_compiler.ir.op_facts)
# ----------------------------------------------------------------------------------------------------


def _defaults_to_uint8(node: ir.Node) -> bool:
    no_zp = len(node.inputs) <= 2 or node.inputs[2] is None
    return is_quantize(node) and no_zp and node.attributes.get("output_dtype") is None


def _data_shape(node: ir.Node, constants: ConstantArrays) -> tuple | None:
    """Shape of the tensor a Q/DQ (de)quantizes; looks through Q -> DQ to the constant."""
    data = node.inputs[0]
    if data is None:
        return None
    array = constants.array(data)
    if array is not None:
        return array.shape
    producer = data.producer()
    if is_dequantize(node) and is_quantize(producer):
        return _data_shape(producer, constants)
    if data.shape is not None:
        return tuple(d if isinstance(d, int) else None for d in data.shape)
    return None


def _weighted_consumers(node: ir.Node) -> list[tuple[ir.Node, rules.WeightedOpRule]]:
    """Weighted ops reading this Q/DQ's tensor at their weight input (through the DQ for a Q)."""
    dqs = [node] if is_dequantize(node) else [u for u, _ in node.outputs[0].uses() if is_dequantize(u)]
    found = []
    for dq in dqs:
        for user, index in dq.outputs[0].uses():
            rule = rules.weighted_rule(user)
            if rule is not None and index == rule.weight_input:
                found.append((user, rule))
    return found


def _feeds_bias_only(node: ir.Node) -> bool:
    uses = list(node.outputs[0].uses())
    for user, index in uses:
        rule = rules.weighted_rule(user)
        if rule is None or rule.bias_input != index:
            return False
    return bool(uses)

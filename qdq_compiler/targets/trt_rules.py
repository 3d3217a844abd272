"""TensorRT's Q/DQ rules as data: the one place the linter, the fusion predictor and the docs read them from.

Every entry names where the rule comes from. `SRC_*` strings point into /work/shared/docs/tensorrt-qdq.md
(which cites NVIDIA's pages) or to another public source; entries marked `DERIVED` follow from the math
of symmetric quantization but no NVIDIA page we checked lists them, so treat predictions based on them
as less certain. To extend a table, add an entry with its source; docs/tensorrt-rules.md mirrors these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

from qdq_compiler.ir import op_facts
from qdq_compiler.ir.editing import constant_array

# Sources (section numbers refer to /work/shared/docs/tensorrt-qdq.md).
SRC_EXPLICIT = "TensorRT 'Explicit Quantization' guide (tensorrt-qdq.md s3)"
SRC_PROCESSING = "TensorRT Q/DQ processing: DQ forward, Q backward across commuting ops (tensorrt-qdq.md s4)"
SRC_PLACEMENT = "TensorRT 'Q/DQ Layer-Placement Recommendations' (tensorrt-qdq.md s4)"
SRC_CONCAT_TIE = (
    "Model Optimizer graph_utils.get_concat_eliminated_tensors; "
    "yolo_deepstream QAT guide (tensorrt-qdq.md s4-5)"
)
SRC_ONNX_TRT = "onnx-tensorrt docs/operators.md (tensorrt-qdq.md s3)"
SRC_MODELOPT_COPY = "Model Optimizer modelopt/onnx/op_types.py copy_ops()"
SRC_ONNX_TRT_IMPORT = (
    "onnx-tensorrt onnxOpImporters.cpp (TensorRT's ONNX parser): Split imports as one ISliceLayer per "
    "output, SpaceToDepth/DepthToSpace as IShuffleLayers (reshape, transpose, reshape)"
)
SRC_MODELOPT_KGEN = (
    "Model Optimizer partitioning.find_fusible_partitions (KGEN: chains of pointwise/elementwise ops "
    "TensorRT generates one kernel for) and graph_utils.filter_quantizable_kgen_heads (quantizes the inputs "
    "of such a chain's head after a Conv; Mul listed as an output-quantization candidate): Model "
    "Optimizer's model of TensorRT, no TensorRT page we checked lists it"
)
DERIVED = "qdqc: derived from the math of symmetric quantization (no NVIDIA page lists it)"

# The opsets Q/DQ features need and the float16/FP8 type sets are ONNX facts: qdq_compiler.ir.op_facts.
INT32_MAX = 2**31 - 1  # a bias folded into the INT32 accumulator, bias / (s_in * s_w), must stay below this

# QOperator-format and integer ops: TensorRT only imports the Q/DQ (QDQ) format.
QOPERATOR_OPS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearConcat",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearSoftmax",
        "QLinearReduceMean",
        "QLinearWhere",
        "QLinearConvTranspose",
        "QAttention",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
    }
)


# ----------------------------------------------------------------------------------------------------
# Weighted (quantizable linear) ops
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightedOpRule:
    """A linear op TensorRT runs in INT8 when its activation and weight inputs are dequantized INT8.

    Which input is the weight and which axis holds its output channels are ONNX facts
    (``qdq_compiler.ir.op_facts.WeightedOp``); this rule adds that TensorRT quantizes it, and the source.
    """

    op: op_facts.WeightedOp
    source: str

    @property
    def op_type(self) -> str:
        return self.op.op_type

    @property
    def activation_input(self) -> int:
        return self.op.activation_input

    @property
    def weight_input(self) -> int:
        return self.op.weight_input

    @property
    def bias_input(self) -> int | None:
        return self.op.bias_input

    @property
    def axis_rule(self) -> str:
        """The per-channel weight axis TensorRT wants (the output channels), in words."""
        return self.op.axis_text

    def weight_axis(self, node: ir.Node, weight_rank: int | None) -> int | None:
        """The output-channel axis a per-channel weight scale must use for `node` (None when unknown)."""
        return self.op.output_channel_axis(node, weight_rank)


WEIGHTED_OPS: dict[str, WeightedOpRule] = {
    op_type: WeightedOpRule(op, SRC_EXPLICIT) for op_type, op in op_facts.WEIGHTED_OPS.items()
}
MAC_OPS = frozenset(WEIGHTED_OPS)


# ----------------------------------------------------------------------------------------------------
# Ops that commute with Q/DQ: Q(op(x)) == op(Q(x)) for a per-tensor, zero-point-0 quantizer.
# ----------------------------------------------------------------------------------------------------


def _resize_is_nearest(node: ir.Node) -> str | None:
    mode = node.attributes.get("mode")
    value = mode.as_string() if mode is not None else "nearest"
    return None if value == "nearest" else f"Resize mode '{value}' interpolates: no commuting with Q"


def _pad_copies_or_zero(node: ir.Node) -> str | None:
    mode_attr = node.attributes.get("mode")
    mode = mode_attr.as_string() if mode_attr is not None else "constant"
    if mode in ("reflect", "edge", "wrap"):
        return None
    if mode != "constant":
        return f"Pad mode '{mode}'"
    value = node.inputs[2] if len(node.inputs) > 2 else None
    if value is None:
        attr = node.attributes.get("value")  # opset < 11
        pad_value = attr.as_float() if attr is not None else 0.0
    else:
        array = constant_array(value)
        if array is None:
            return "Pad constant_value is not constant"
        pad_value = float(array.reshape(-1)[0]) if array.size else 0.0
    return None if pad_value == 0.0 else f"Pad constant_value {pad_value} is not 0 (Q(0) = 0 only for 0)"


def _dropout_is_identity(node: ir.Node) -> str | None:
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        mode = constant_array(node.inputs[2])
        if mode is None or bool(mode.reshape(-1)[0]):
            return "Dropout training_mode may be on"
    if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
        return "Dropout mask output is used"
    return None


def _maxpool_without_indices(node: ir.Node) -> str | None:
    if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
        return "MaxPool Indices output is used"
    return None


@dataclass(frozen=True)
class CommutingOpRule:
    """An op Q/DQ move across; `data_inputs` carry the quantized tensor ('all' = every input).

    After propagation a DQ(s_in) meets a Q(s_out) around the op: they cancel only when s_in == s_out,
    otherwise a requantize layer stays. `ties_inputs` marks ops (Concat) whose inputs must also share one
    scale for the DQs to move past them.
    """

    op_type: str
    data_inputs: tuple[int, ...] | str
    ties_inputs: bool
    source: str
    condition: Callable[[ir.Node], str | None] | None = None
    note: str = ""

    def data_input_indices(self, node: ir.Node) -> list[int]:
        """Indices of the inputs that carry the (de)quantized data for `node`."""
        if isinstance(self.data_inputs, str):  # "all"
            return [i for i, value in enumerate(node.inputs) if value is not None]
        return [i for i in self.data_inputs if i < len(node.inputs) and node.inputs[i] is not None]

    def blocks(self, node: ir.Node) -> str | None:
        """Why Q/DQ cannot move across this node (None when they can)."""
        return self.condition(node) if self.condition is not None else None


COMMUTING_OPS: dict[str, CommutingOpRule] = {
    rule.op_type: rule
    for rule in (
        CommutingOpRule(
            "MaxPool",
            (0,),
            False,
            SRC_PROCESSING,
            _maxpool_without_indices,
            "max is monotonic, so it commutes with a positive-scale Q",
        ),
        CommutingOpRule("Reshape", (0,), False, SRC_PROCESSING),
        CommutingOpRule("Transpose", (0,), False, SRC_PROCESSING),
        CommutingOpRule("Slice", (0,), False, SRC_PROCESSING),
        CommutingOpRule(
            "Concat",
            "all",
            True,
            SRC_PROCESSING + "; " + SRC_CONCAT_TIE,
            note="all inputs and the output must share one scale",
        ),
        CommutingOpRule(
            "Resize",
            (0,),
            False,
            SRC_PROCESSING,
            _resize_is_nearest,
            "nearest only: linear/cubic interpolation creates new values",
        ),
        CommutingOpRule("Flatten", (0,), False, SRC_MODELOPT_COPY),
        CommutingOpRule(
            "Split",
            (0,),
            False,
            SRC_MODELOPT_COPY + "; " + SRC_ONNX_TRT_IMPORT,
            note="one Slice per output: a Q on one output moves back alone",
        ),
        CommutingOpRule(
            "SpaceToDepth", (0,), False, SRC_ONNX_TRT_IMPORT, note="shuffles: pure data movement"
        ),
        CommutingOpRule(
            "DepthToSpace", (0,), False, SRC_ONNX_TRT_IMPORT, note="shuffles: pure data movement"
        ),
        CommutingOpRule("Squeeze", (0,), False, SRC_MODELOPT_COPY),
        CommutingOpRule("Unsqueeze", (0,), False, DERIVED, note="inverse of Squeeze: pure reshape"),
        CommutingOpRule("Identity", (0,), False, DERIVED),
        CommutingOpRule("Dropout", (0,), False, DERIVED, _dropout_is_identity, "identity at inference"),
        CommutingOpRule("Gather", (0,), False, SRC_MODELOPT_COPY, note="selects elements of input 0"),
        CommutingOpRule(
            "Pad",
            (0,),
            False,
            DERIVED,
            _pad_copies_or_zero,
            "constant 0 maps to q=0 (zero-point 0); reflect/edge copy existing values",
        ),
    )
}


# ----------------------------------------------------------------------------------------------------
# Epilogues that fuse into a Conv/ConvTranspose/Gemm/MatMul before its output Q
# ----------------------------------------------------------------------------------------------------

POINTWISE_EPILOGUE_OPS: dict[str, str] = {
    "Relu": SRC_PROCESSING,
    "LeakyRelu": SRC_PROCESSING,
    "Sigmoid": SRC_PROCESSING,
    "Tanh": SRC_PROCESSING,
    "Clip": SRC_PROCESSING,
    "HardSigmoid": SRC_PROCESSING,
    "HardSwish": SRC_PROCESSING,
    "BatchNormalization": SRC_PLACEMENT + " (rule 3: TensorRT fuses Conv+BN+ReLU)",
}
# Two-node and two-input epilogues, matched by pattern in targets/fusion.py.
PATTERN_EPILOGUES: dict[str, str] = {
    "SiLU (x * Sigmoid(x))": SRC_PROCESSING,
    "residual Add (other input through a DQ)": SRC_PLACEMENT + " (rule 4)",
}

# ----------------------------------------------------------------------------------------------------
# Non-weighted ops TensorRT runs in INT8 when all inputs come through DQ and the output goes to a Q
# ----------------------------------------------------------------------------------------------------

# Consumers that read only a tensor's shape: a DQ feeding them needs no dequantize layer.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})

INT8_CAPABLE_OPS: dict[str, str] = {
    "MaxPool": SRC_PROCESSING,
    "AveragePool": SRC_PROCESSING + " (quantizable AveragePool example)",
    "GlobalAveragePool": SRC_PROCESSING,
    "Add": SRC_PROCESSING + " (quantized element-wise addition example)",
    "Concat": SRC_PROCESSING,
    "Mul": SRC_MODELOPT_KGEN,
}
# A pointwise activation alone between a DQ and a Q (e.g. onnxruntime's Conv -> Q/DQ -> Relu -> Q/DQ):
# predicted as its own INT8 pointwise layer. It costs a layer (the Q/DQ split the Conv+activation fusion,
# placement rule 5) but no reformat.
INT8_POINTWISE_OPS: dict[str, str] = {
    op: DERIVED + "; TensorRT fuses DQ + pointwise + Q into one kernel (unverified here)"
    for op in POINTWISE_EPILOGUE_OPS
}


def weighted_rule(node: ir.Node) -> WeightedOpRule | None:
    """The weighted-op rule for `node`, or None."""
    return WEIGHTED_OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None


def commuting_rule(node: ir.Node) -> CommutingOpRule | None:
    """The commuting rule for `node` when Q/DQ can move across it, else None."""
    if node.domain not in ("", "ai.onnx"):
        return None
    rule = COMMUTING_OPS.get(node.op_type)
    if rule is None or rule.blocks(node) is not None:
        return None
    return rule


# Small layers: where TensorRT's INT8 kernels do not pay off. Model Optimizer's INT8 rules, written out as
# facts (tensorrt-qdq.md s4): a Conv needs 16+ input (per group) and output channels, except a dense Conv with
# a square kernel whose input or output count is a multiple of 8 and that either reads a graph input (the
# stem) or has 16+ channels on one side, and a grouped Conv with 8k output channels and kernels of 3+;
# a Gemm/MatMul needs K and N of 16+ for INT8 tensor-core kernels.
SRC_SMALL_LAYERS = (
    "Model Optimizer graph_utils.find_nodes_from_convs_to_exclude and _MIN_MATMUL_DIM (tensorrt-qdq.md s4)"
)
MIN_INT8_KERNEL_CHANNELS = 16
INT8_CHANNEL_MULTIPLE = 8


def small_layer_reason(
    node: ir.Node, weight_dims: tuple[int, ...], reads_graph_input: bool = False
) -> str | None:
    """Why `node` (Conv/Gemm/MatMul with a weight of `weight_dims`) is too small for TensorRT's INT8 kernels,
    or None when they suit it. ConvTranspose is not judged (no rule source covers it)."""
    wide = MIN_INT8_KERNEL_CHANNELS
    if node.op_type in ("Gemm", "MatMul"):
        k, n = op_facts.weight_channels(node, weight_dims)
        if k < wide or n < wide:
            return f"K={k}, N={n}: INT8 GEMM kernels need K and N of at least {wide}"
        return None
    if node.op_type != "Conv" or len(weight_dims) < 3:
        return None
    out_channels, in_per_group, kernel = weight_dims[0], weight_dims[1], weight_dims[2:]
    if out_channels >= wide and in_per_group >= wide:
        return None
    group_attr = node.attributes.get("group")
    group = group_attr.as_int() if group_attr is not None else 1
    multiple = INT8_CHANNEL_MULTIPLE
    size = f"{in_per_group * group}->{out_channels} channels" + (f" (group {group})" if group > 1 else "")
    if group > 1:
        if out_channels % multiple == 0 and all(k >= 3 for k in kernel):
            return None
        return f"{size}: grouped INT8 conv kernels need {multiple}k output channels and kernels of 3+"
    if out_channels % multiple and in_per_group % multiple:
        return f"{size}: INT8 conv kernels need {wide}+ channels or a multiple of {multiple}"
    if not (reads_graph_input or max(out_channels, in_per_group) >= wide):
        return f"{size}: INT8 conv kernels need {wide}+ channels on one side (or the graph input)"
    if len(set(kernel)) != 1:
        return f"{size}: a small INT8 conv needs a square kernel"
    return None

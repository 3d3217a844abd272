"""place-qdq: put Q/DQ where TensorRT fuses them into INT8 kernels (its placement recommendations).

- every input of Conv/ConvTranspose/Gemm/MatMul: activations per-tensor, weights per-channel on the
  output-channel axis; nothing on their outputs;
- the residual input of a skip-connection Add whose other input is a quantized weighted op's output
  (after its fusible activation/BN epilogue), so Conv+act+Add fuses;
- the input of pooling ops inside the quantized region (MaxPool, AveragePool, GlobalAveragePool);
- one Q/DQ per tensor, shared by all its quantized consumers; other consumers keep the float tensor.

Weighted layers stay float when excluded by name pattern or op type, when they are detection-head output
layers (no weighted layer downstream; `quantize-head` overrides), or when both their input channels per
group and their output channels are below `min-channels` (see docs/placement.md for why).
Activation scales are placeholders (1.0) until `calibrate` sets them; weight scales are per-channel abs-max.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.calib.weights import per_channel_amax
from qdq_compiler.ir.analysis import nodes_reaching
from qdq_compiler.ir.editing import constant_array, is_constant, topological_sort
from qdq_compiler.ir.op_facts import GATE_OPS, weight_channels, weighted_op
from qdq_compiler.ir.qdq import is_dequantize
from qdq_compiler.ir.validate import check_weighted_ranks
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.decisions import LayerDecision, record_decisions
from qdq_compiler.quant.grid import scale_from_amax
from qdq_compiler.quant.placement_warnings import warn_placement
from qdq_compiler.rewrite import Rewriter
from qdq_compiler.targets.trt_rules import POINTWISE_EPILOGUE_OPS, small_layer_reason

POOLING_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool")
SMALL_LAYER_RULES = ("min-channels", "trt-kernels")
PLACEHOLDER_SCALE = np.float32(1.0)


@register_pass
class PlaceQDQ(Pass):
    """Insert Q/DQ pairs at the inputs TensorRT wants quantized."""

    name = "place-qdq"
    summary = "Insert Q/DQ where TensorRT fuses INT8 kernels (weighted-op inputs, residual Adds, pooling)."

    @dataclass(frozen=True)
    class Options:
        policy: str = "trt"
        exclude: tuple[str, ...] = ()
        exclude_ops: tuple[str, ...] = ()
        quantize_head: bool = False
        min_channels: int = 4
        small_layers: str = "min-channels"  # or "trt-kernels": TensorRT's INT8 kernel sizes (trt_rules)
        pooled_float: bool = False  # convs on pooled 1x1 maps (squeeze-excitation) stay float
        int8_mul: bool = True  # Mul of two quantized activations (the SE gate) as one INT8 pointwise kernel
        weight_method: str = "max"

        def __post_init__(self) -> None:
            if self.policy != "trt":
                raise ValueError(f"unknown policy '{self.policy}' (valid: trt)")
            if self.small_layers not in SMALL_LAYER_RULES:
                raise ValueError(
                    f"unknown small-layers rule '{self.small_layers}' (valid: {', '.join(SMALL_LAYER_RULES)})"
                )
            if self.min_channels < 0:
                raise ValueError("min-channels must be >= 0")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        topological_sort(graph)
        check_weighted_ranks(graph, "the model")  # ranks known only after shape inference
        result = PassResult(modified=False)
        rewriter = Rewriter(graph)  # one naming scope for every pair inserted below
        decided = self._decide(graph)
        warn_placement(decided, self.options.exclude, self.options.exclude_ops, ctx)
        record_decisions(model, [decision for _, decision in decided])
        weighted = [node for node, decision in decided if decision.int8]
        quantized = {id(node) for node in weighted}
        activation_uses: dict[int, tuple[ir.Value, list[ir.Node]]] = {}

        def want(value: ir.Value | None, consumer: ir.Node) -> None:
            if value is None or _already_dequantized(value) or is_constant(value):
                return
            activation_uses.setdefault(id(value), (value, []))[1].append(consumer)

        for node in weighted:
            rule = weighted_op(node)
            assert rule is not None, "layers were decided by their weighted-op rule"
            want(node.inputs[rule.activation_input], node)
        region = _quantized_region(graph, weighted)
        for node in graph:
            if node.op_type in POOLING_OPS and id(node) in region:
                want(node.inputs[0], node)
            residual = _residual_input(node, quantized)
            if residual is not None:
                want(residual, node)
        if self.options.int8_mul:
            for node in graph:
                for value in _int8_mul_inputs(node, activation_uses, quantized):
                    want(value, node)
        for node in graph:
            for value in _quantized_concat_inputs(node, activation_uses):
                want(value, node)
        for value, consumers in activation_uses.values():
            rewriter.insert_qdq_pair(value, PLACEHOLDER_SCALE, consumers=consumers)
            result.statistics["num-activation-qdq-inserted"] += 1
        for node in weighted:
            if self._quantize_weight(node, quantized, rewriter):
                result.statistics["num-weight-qdq-inserted"] += 1
        result.statistics["num-layers-int8"] = len(quantized)
        result.statistics["num-layers-float"] = len(decided) - len(quantized)
        result.modified = bool(
            result.statistics["num-activation-qdq-inserted"] or result.statistics["num-weight-qdq-inserted"]
        )
        return result

    def _decide(self, graph: ir.Graph) -> list[tuple[ir.Node, LayerDecision]]:
        """INT8 or float for every weighted layer, with the reason for float."""
        heads = _head_layers(graph) if not self.options.quantize_head else set()
        decisions = []
        for node in graph:
            rule = weighted_op(node)
            if rule is None:
                continue
            reason = None
            weight = node.inputs[rule.weight_input] if len(node.inputs) > rule.weight_input else None
            if any(fnmatch.fnmatchcase(node.name or "", p) for p in self.options.exclude):
                reason = "excluded by name pattern"
            elif node.op_type in self.options.exclude_ops:
                reason = "excluded by op type"
            elif weight is None or (not is_constant(weight) and not _already_dequantized(weight)):
                reason = "weight is not constant"
            elif id(node) in heads:
                reason = "detection-head output layer (use --quantize-head to quantize)"
            elif max(_channels(node, weight)) < self.options.min_channels:
                reason = f"fewer than {self.options.min_channels} input and output channels (too small)"
            elif self.options.small_layers == "trt-kernels" and (small := _small_for_trt(node, weight)):
                reason = small
            elif self.options.pooled_float and _reads_pooled_map(node, rule.activation_input):
                reason = "reads a pooled 1x1 map (squeeze-excitation): negligible MACs, kept float"
            decision = LayerDecision(node.name or node.op_type, node.op_type, reason is None, reason or "")
            decisions.append((node, decision))
        return decisions

    def _quantize_weight(self, node: ir.Node, int8_layers: set[int], rewriter: Rewriter) -> bool:
        """Per-channel Q/DQ on the constant float weight of `node`, shared by the INT8 layers reading it; a
        float layer sharing the weight keeps reading the float initializer."""
        rule = weighted_op(node)
        assert rule is not None, "layers were decided by their weighted-op rule"
        weight = node.inputs[rule.weight_input]
        array = constant_array(weight)
        if weight is None or array is None or _already_dequantized(weight):
            return False
        users = [user for user, _ in weight.uses() if id(user) in int8_layers]
        weight, array, per_channel = _matmul_weight_as_matrix(weight, array, users, rewriter)
        axis = rule.output_channel_axis(node, array.ndim) if per_channel else None
        amax = per_channel_amax(array, axis, self.options.weight_method)
        scale = scale_from_amax(amax)
        rewriter.insert_qdq_pair(weight, scale, consumers=users, axis=axis if scale.ndim else None)
        return True


def _matmul_weight_as_matrix(
    weight: ir.Value, array: np.ndarray, users: list[ir.Node], rewriter: Rewriter
) -> tuple[ir.Value, np.ndarray, bool]:
    """The weight to quantize for `users`, its array, and whether it can be per-channel.

    MatMul weights must be rank 2 for per-channel scales: onnxruntime fuses DQ -> MatMul into
    MatMulInteger(ToFloat), which takes a 1-D weight zero-point only for a 2-D B and fails at run time
    ("b zero point is not valid") for B [1, 1, K, N] at optimization levels EXTENDED and ALL. So:
    - B [1, ..., 1, K, N] read by MatMuls whose activation has at least B's rank becomes a new 2-D constant
      [K, N] for them (the broadcast gives the same output shape): per-channel on axis 1, the [K, N] form
      TensorRT quantizes per output channel (tensorrt-qdq.md s3). Float users keep the original B.
    - any other MatMul weight of rank != 2 (batched B [2, K, N], a B of higher rank than the activation, a
      vector B [K]) is quantized per-tensor, valid for onnxruntime at every level and for TensorRT.
    """
    if array.ndim == 2 or not users or any(user.op_type != "MatMul" for user in users):
        return weight, array, True
    squeezable = array.ndim > 2 and all(dim == 1 for dim in array.shape[:-2])
    if not squeezable or not all(_rank(user.inputs[0]) >= array.ndim for user in users):
        return weight, array, False
    matrix = array.reshape(array.shape[-2:])
    matrix_value = rewriter.add_constant(matrix, f"{weight.name or 'weight'}_matrix")
    for user in users:
        rewriter.set_input(user, 1, matrix_value)
    if not weight.uses() and not weight.is_graph_output() and weight.is_initializer():
        rewriter.remove_initializer(weight)
    return matrix_value, matrix, True


def _rank(value: ir.Value | None) -> int:
    """The rank of a value's inferred shape, -1 when unknown."""
    return len(value.shape) if value is not None and value.shape is not None else -1


def _already_dequantized(value: ir.Value) -> bool:
    return is_dequantize(value.producer())


def _channels(node: ir.Node, weight: ir.Value) -> tuple[int, int]:
    """(input channels per group, output channels) of a weighted layer, from its weight's shape."""
    dims = _weight_dims(weight)
    if dims is None:  # an already-quantized weight of unknown shape: not too small
        return 1 << 30, 1 << 30
    return weight_channels(node, dims)


def _small_for_trt(node: ir.Node, weight: ir.Value) -> str | None:
    """TensorRT's INT8 kernel-size rule (`trt_rules.small_layer_reason`) for a layer with a known weight."""
    dims = _weight_dims(weight)
    if dims is None:
        return None
    reads_input = any(value is not None and value.is_graph_input() for value in node.inputs)
    return small_layer_reason(node, dims, reads_input)


def _weight_dims(weight: ir.Value) -> tuple[int, ...] | None:
    """The weight's dims from its static shape or its constant array; None when neither is known."""
    shape = weight.shape
    if shape is not None and all(isinstance(d, int) for d in shape):
        return tuple(int(d) for d in shape if isinstance(d, int))
    array = constant_array(weight)
    return tuple(array.shape) if array is not None else None


def _reads_pooled_map(node: ir.Node, activation_input: int) -> bool:
    """True for a Conv whose activation is a 4-D map of 1x1 spatial size (known shape)."""
    value = node.inputs[activation_input] if len(node.inputs) > activation_input else None
    if node.op_type != "Conv" or value is None or value.shape is None or len(value.shape) < 3:
        return False
    return all(dim == 1 for dim in value.shape[2:])


def _head_layers(graph: ir.Graph) -> set[int]:
    """Weighted layers from which no other weighted layer is reachable: the detection head outputs."""
    reaches_weighted = nodes_reaching(graph, lambda node: weighted_op(node) is not None)
    return {id(n) for n in graph if weighted_op(n) is not None and id(n) not in reaches_weighted}


def _quantized_region(graph: ir.Graph, weighted: list[ir.Node]) -> set[int]:
    """Nodes from which a quantized weighted layer is reachable (their INT8 output would be used)."""
    targets = {id(n) for n in weighted}
    return nodes_reaching(graph, lambda node: id(node) in targets)


def _int8_mul_inputs(
    node: ir.Node, activation_uses: dict[int, tuple[ir.Value, list[ir.Node]]], quantized: set[int]
) -> list[ir.Value]:
    """Both inputs of Mul(a, b) when its output is quantized and each input is either quantized for another
    reader or a quantized layer's fused output: the squeeze-excitation Mul(x, HardSigmoid(fc2(...))), whose
    x GlobalAveragePool reads quantized. Read through Q/DQ, x feeds only Qs (its producer writes INT8), the
    gate's Q fuses into fc2, and DQ -> Mul -> Q is the pointwise chain TensorRT generates one kernel for
    (trt_rules.SRC_MODELOPT_KGEN: Model Optimizer places Q/DQ so on SE blocks)."""
    if node.op_type != "Mul" or len(node.inputs) != 2 or None in node.inputs:
        return []
    if not node.outputs or id(node.outputs[0]) not in activation_uses:
        return []
    inputs = [value for value in node.inputs if value is not None]
    if any(is_constant(value) for value in inputs) or inputs[0] is inputs[1]:
        return []
    if not all(id(v) in activation_uses or _fuses_into_quantized_layer(v, quantized) for v in inputs):
        return []
    return inputs


def _quantized_concat_inputs(
    node: ir.Node, activation_uses: dict[int, tuple[ir.Value, list[ir.Node]]]
) -> list[ir.Value]:
    """The inputs of a Concat whose output is quantized that are themselves quantized for other consumers.

    TensorRT moves the Concat output's Q onto every input (tensorrt-qdq.md s4), so a quantized input read
    in float there gets a second Q beside its own, and its producer cannot fuse either (its output feeds a
    float reader until the Qs merge). Reading it through its DQ instead gives TensorRT a DQ->Q pair of one
    scale (unify-scales ties Concat members) that cancels, and leaves the input's own Q its only reader: it
    fuses into the producer or moves on back. The values are unchanged: the Concat's Q re-quantizes them on
    the same grid.
    """
    if node.op_type != "Concat" or not node.outputs or id(node.outputs[0]) not in activation_uses:
        return []
    return [value for value in node.inputs if value is not None and id(value) in activation_uses]


def _residual_input(node: ir.Node, quantized: set[int]) -> ir.Value | None:
    """For Add(conv_out, skip) whose one side is the fusible epilogue of a quantized weighted layer (see
    :func:`_fuses_into_quantized_layer`), the skip input."""
    if node.op_type != "Add" or len(node.inputs) != 2:
        return None
    left, right = node.inputs
    if left is None or right is None:
        return None
    if is_constant(left) or is_constant(right):
        return None
    if left.shape is not None and right.shape is not None and left.shape != right.shape:
        return None  # broadcasting Add is arithmetic, not a skip connection
    if _fuses_into_quantized_layer(left, quantized):
        return right if not _already_dequantized(right) else None
    if _fuses_into_quantized_layer(right, quantized):
        return left if not _already_dequantized(left) else None
    return None


def _fuses_into_quantized_layer(value: ir.Value, quantized: set[int]) -> bool:
    """Whether `value`, read only by the Add, is a quantized weighted layer's output after the epilogue
    TensorRT fuses into it (tensorrt-qdq.md s4: activation, BN; the fusion prediction's `_epilogue` walks the
    same ops): pointwise epilogue ops and the gates x * Sigmoid(x) (SiLU) and x * HardSigmoid(x)
    (HardSwish), each tensor on the way read by nothing else. Then Conv+act+Add fuses when the skip input
    is quantized (placement rule 4), as in YOLOv5/v8 bottlenecks (Conv, SiLU, Add)."""
    current, readers = value, 1  # the gate's input is read by the gate and its Mul
    while len(current.uses()) == readers and not current.is_graph_output():
        producer = current.producer()
        if producer is None:
            return False
        if weighted_op(producer) is not None:
            return id(producer) in quantized
        if producer.op_type in POINTWISE_EPILOGUE_OPS and producer.inputs and producer.inputs[0] is not None:
            current, readers = producer.inputs[0], 1
            continue
        gated = _gated_input(producer)
        if gated is None:
            return False
        current, readers = gated, 2
    return False


def _gated_input(mul: ir.Node) -> ir.Value | None:
    """x for Mul(x, Sigmoid(x)) or Mul(x, HardSigmoid(x)) whose gate feeds only the Mul (the SiLU/HardSwish
    pattern the fusion prediction fuses); else None. The caller checks that x feeds nothing else."""
    if mul.op_type != "Mul" or len(mul.inputs) != 2 or None in mul.inputs:
        return None
    for x, gate in (mul.inputs, reversed(mul.inputs)):
        producer = gate.producer()  # type: ignore[union-attr]
        if (
            producer is not None
            and producer.op_type in GATE_OPS
            and producer.inputs[0] is x
            and len(gate.uses()) == 1  # type: ignore[union-attr]
        ):
            return x
    return None

"""fold-bn: fold BatchNormalization into the Conv, ConvTranspose or Gemm that feeds it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.op_facts import weighted_op
from qdq_compiler.ir.qdq import broadcast_scale
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.rewrite import RewritePattern, Rewriter, apply_patterns_greedily, sole_user

FOLDABLE_PRODUCERS = ("Conv", "ConvTranspose", "Gemm")


@register_pass
class FoldBatchNorm(Pass):
    """TensorRT fuses Conv+BN itself, so BN must be folded before Q/DQ are placed (weights then carry it)."""

    name = "fold-bn"
    summary = "Fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm where legal."

    @dataclass(frozen=True)
    class Options:
        pass

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        rewriter = apply_patterns_greedily(model.graph, [FoldBatchNormPattern()])
        if rewriter.modified:
            rewriter.count("num-initializers-removed", rewriter.remove_unused_initializers())
        return PassResult(modified=rewriter.modified, statistics=rewriter.statistics)


class FoldBatchNormPattern(RewritePattern):
    """BatchNormalization(producer(x, W, b)) -> producer(x, W', b') with per-channel scale folded in."""

    anchor_op = "BatchNormalization"

    def match_and_rewrite(self, node: ir.Node, rewriter: Rewriter) -> bool:
        source = node.inputs[0]
        producer = source.producer() if source is not None else None
        if (
            producer is None
            or producer.op_type not in FOLDABLE_PRODUCERS
            or producer.domain not in ("", "ai.onnx")
        ):
            return rewriter.notify_match_failure(node, "input is not produced by Conv/ConvTranspose/Gemm")
        if source is None or sole_user(source) is not node:
            return rewriter.notify_match_failure(node, "producer output has other users")
        if len(node.outputs) > 1 and any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
            return rewriter.notify_match_failure(node, "training-mode outputs are used")
        training = node.attributes.get("training_mode")
        if training is not None and training.as_int() != 0:
            return rewriter.notify_match_failure(node, "training_mode=1")
        params = [constant_array(v) for v in node.inputs[1:5]]
        if any(p is None for p in params):
            return rewriter.notify_match_failure(node, "BN parameters are not constant")
        gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        eps_attr = node.attributes.get("epsilon")
        epsilon = eps_attr.as_float() if eps_attr is not None else 1e-5
        scale = gamma / np.sqrt(var + epsilon)
        shift = beta - mean * scale
        folded = _fold_weights(producer, scale, shift, rewriter)
        if folded is None:
            return False
        weight, bias = folded
        base = producer.name or producer.outputs[0].name or "conv"
        new_weight = rewriter.add_constant(weight, f"{base}.weight_folded")
        new_bias = rewriter.add_constant(bias, f"{base}.bias_folded")
        rewriter.set_input(producer, 1, new_weight)
        rewriter.set_input(producer, 2, new_bias)
        rewriter.replace_value(node.outputs[0], producer.outputs[0])
        rewriter.erase(node)
        rewriter.count("num-bn-folded")
        return True


def _fold_weights(
    producer: ir.Node, scale: np.ndarray, shift: np.ndarray, rewriter: Rewriter
) -> tuple[np.ndarray, np.ndarray] | None:
    """New (weight, bias) with BN folded in, in the weight's dtype; None (with a reason) when illegal."""
    weight = constant_array(producer.inputs[1]) if len(producer.inputs) > 1 else None
    if weight is None:
        rewriter.notify_match_failure(producer, "weight is not constant")
        return None
    channels = scale.shape[0]
    bias_value = producer.inputs[2] if len(producer.inputs) > 2 else None
    bias = constant_array(bias_value) if bias_value is not None else np.zeros(channels, weight.dtype)
    if bias is None:
        rewriter.notify_match_failure(producer, "bias is not constant")
        return None
    w = weight.astype(np.float64)
    b = (
        np.broadcast_to(bias.astype(np.float64).reshape(-1), (channels,))
        if bias.size in (1, channels)
        else None
    )
    if b is None:
        rewriter.notify_match_failure(producer, "bias shape does not broadcast to the channels")
        return None
    if producer.op_type == "ConvTranspose":
        group_attr = producer.attributes.get("group")
        if group_attr is not None and group_attr.as_int() != 1:
            rewriter.notify_match_failure(producer, "grouped ConvTranspose is not folded")
            return None
    if producer.op_type == "Gemm" and not _gemm_is_foldable(producer, rewriter):
        return None
    rule = weighted_op(producer)
    axis = rule.output_channel_axis(producer, w.ndim) if rule is not None else None  # the output-channel axis
    if axis is None:
        rewriter.notify_match_failure(producer, "no output-channel axis")
        return None
    if w.shape[axis] != channels:
        rewriter.notify_match_failure(producer, "channel count mismatch")
        return None
    w = w * broadcast_scale(scale, w.ndim, axis)
    beta_attr = producer.attributes.get("beta") if producer.op_type == "Gemm" else None
    if beta_attr is not None:
        b = b * beta_attr.as_float()
        rewriter.set_attribute(producer, ir.AttrFloat32("beta", 1.0))
    new_bias = b * scale + shift
    return w.astype(weight.dtype), new_bias.astype(weight.dtype)


def _gemm_is_foldable(gemm: ir.Node, rewriter: Rewriter) -> bool:
    """Gemm folds when alpha is 1 and A is not transposed (BN then acts on the output columns)."""
    alpha = gemm.attributes.get("alpha")
    if alpha is not None and alpha.as_float() != 1.0:
        return rewriter.notify_match_failure(gemm, "Gemm alpha != 1")
    return True

"""fold-scales: store quantized weights as INT8 initializers behind a DequantizeLinear.

Q(W_float) -> DQ becomes W_int8 -> DQ with W_int8 = clip(round(W / scale), -127, 127) (round half to even,
as QuantizeLinear does), so TensorRT needs no constant folding and the file shrinks about 4x.
`weights=qdq` leaves the float weights behind their Q -> DQ instead (`--weights qdq`; the pass does nothing).
The float initializer stays only while something else reads it: a layer kept float that shares the weight
with an INT8 layer (place-qdq gives the DQ to the INT8 layers alone) keeps its float weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.op_facts import qdq_axis
from qdq_compiler.ir.qdq import broadcast_scale, is_dequantize, is_quantize
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.grid import quantize_symmetric
from qdq_compiler.rewrite import Rewriter

WEIGHT_FORMS = ("int8", "qdq")  # int8: INT8 initializers behind DQ; qdq: float weights behind Q -> DQ


@register_pass
class FoldScales(Pass):
    """Replace each Q of a constant float weight by the INT8 tensor it computes."""

    name = "fold-scales"
    summary = "Fold Q(weight) into INT8 initializers behind DequantizeLinear (symmetric, [-127, 127])."

    @dataclass(frozen=True)
    class Options:
        weights: str = "int8"

        def __post_init__(self) -> None:
            if self.weights not in WEIGHT_FORMS:
                raise ValueError(f"weights must be one of {', '.join(WEIGHT_FORMS)}, got {self.weights!r}")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        result = PassResult(modified=False)
        if self.options.weights == "qdq":  # float weights stay behind Q -> DQ
            return result
        rewriter = Rewriter(graph)  # one naming scope for every INT8 initializer made below
        folded: list[ir.Node] = []  # Qs nothing reads any more, erased together
        for node in list(graph):
            if not is_quantize(node):
                continue
            weight = constant_array(node.inputs[0])
            scale = constant_array(node.inputs[1])
            if weight is None or scale is None:
                continue
            stored = quantize_weight(weight, scale, qdq_axis(node))
            base = input_of(node, 0).name or "weight"
            int8_value = rewriter.add_constant(stored, f"{base}_int8")
            for user, index in node.outputs[0].uses():
                if is_dequantize(user) and index == 0:
                    rewriter.set_input(user, 0, int8_value)
            if not node.outputs[0].uses():
                folded.append(node)
            result.statistics["num-weights-folded"] += 1
        rewriter.erase_all(folded)
        if result.statistics:
            rewriter.remove_unused_initializers()
            result.modified = True
        return result


def quantize_weight(weight: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric INT8 codes of `weight`, per-channel along `axis` when `scale` is a vector."""
    return quantize_symmetric(weight, broadcast_scale(scale, weight.ndim, axis))

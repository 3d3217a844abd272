"""unify-scales: give every tensor in a scale group (Concat, MaxPool, commuting ops) one scale.

Rule for the group's amax: the largest calibrated amax among its quantized members. A Concat's output range
is the union of its inputs' ranges, so the largest member amax clips none of them; taking a smaller one would
clip the widest branch, which is the error TensorRT users see as lost boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.qdq import axis_of, scale_of, set_scale
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.scale_groups import quantizers_of, scale_groups


@register_pass
class UnifyScales(Pass):
    """Tie the scales TensorRT needs equal, so Q/DQ cancel instead of leaving requantize layers."""

    name = "unify-scales"
    summary = "Give all Concat inputs/output and commuting-op inputs/outputs one scale per group (max amax)."

    @dataclass(frozen=True)
    class Options:
        tie_residual_add: bool = False

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        result = PassResult(modified=False)
        for group in scale_groups(model.graph, self.options.tie_residual_add):
            quantizers = [q for tensor in group for q in quantizers_of(tensor) if axis_of(q) is None]
            scales = [scale_of(q) for q in quantizers]
            known = [s for s in scales if s is not None]
            if len(quantizers) < 2 or not known:
                continue
            result.statistics["num-scale-groups"] += 1
            shared = np.max(np.stack([np.asarray(s).reshape(()) for s in known]))
            for quantize, scale in zip(quantizers, scales):
                if scale is not None and np.asarray(scale).reshape(()) == shared:
                    continue
                set_scale(quantize, shared)
                result.statistics["num-scales-unified"] += 1
        result.modified = result.statistics["num-scales-unified"] > 0
        return result

"""Take an activation Q/DQ back out after placement: the tensor is read in float again, and every weighted
layer that read it through the DQ becomes a float layer (float weights, a recorded decision with a reason).

Used where a later pass finds a quantizer should not be there after all: ``import-scales{missing=float}``
(no imported scale) and ``unify-scales{disagree=float}`` (a scale group whose members' ranges disagree).
Call ``eliminate_dead_code`` afterwards to drop the bypassed Q/DQ.
"""

from __future__ import annotations

import onnx_ir as ir

from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.op_facts import is_weight_quantizer, weighted_op
from qdq_compiler.ir.qdq import is_dequantize
from qdq_compiler.quant.decisions import mark_float


def unquantize(model: ir.Model, quantize: ir.Node, reason: str) -> None:
    """Let the DQs after ``quantize`` read its float input instead; weighted readers become float layers."""
    source = input_of(quantize, 0)
    for dq, _ in list(quantize.outputs[0].uses()):
        for user, _ in list(dq.outputs[0].uses()):
            if weighted_op(user) is not None:
                read_float_weights(user)
                mark_float(model, user, reason)
        dq.outputs[0].replace_all_uses_with(source)


def read_float_weights(node: ir.Node) -> None:
    """Bypass the Q->DQ place-qdq put on ``node``'s constant inputs (a float layer keeps float weights)."""
    for index, value in enumerate(node.inputs):
        dq = value.producer() if value is not None else None
        q = dq.inputs[0].producer() if is_dequantize(dq) and dq.inputs[0] is not None else None
        if is_weight_quantizer(q):
            node.replace_input_with(index, q.inputs[0])

"""Activation scales from an amax: the step calibrate and import-scales share.

Each activation QuantizeLinear gets ``scale = amax / 127`` (``qdq_compiler.quant.grid``), and its tensor
keeps the amax as value state ``amax`` (``qdq_compiler.amax``, shown in IR dumps; strip-qdq clears it).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qdq_compiler.ir.access import input_of
from qdq_compiler.ir.op_facts import is_activation_quantizer
from qdq_compiler.ir.qdq import scale_of
from qdq_compiler.ir.state import set_value_state
from qdq_compiler.quant.grid import scale_from_amax
from qdq_compiler.rewrite.rewriter import Rewriter

__all__ = ["AMAX_STATE", "activation_quantizers", "apply_amax", "quantized_tensor_name"]

AMAX_STATE = "amax"  # state of each calibrated tensor: its amax (qdq_compiler.amax, shown in IR dumps)


def activation_quantizers(graph: ir.Graph) -> list[ir.Node]:
    """QuantizeLinear nodes whose input is an activation (not a constant weight), in graph order."""
    return [node for node in graph if is_activation_quantizer(node)]


def quantized_tensor_name(quantize: ir.Node) -> str:
    """The name of the tensor an activation Q reads ("" when unnamed)."""
    return input_of(quantize, 0).name or ""


def apply_amax(quantize: ir.Node, amax: float, rewriter: Rewriter) -> bool:
    """Give an activation Q the scale ``amax / 127`` (amax kept on its tensor); False if it had it already.

    A new scale constant (when the old one is shared) is named from ``rewriter``'s scope: one per pass.
    """
    set_value_state(input_of(quantize, 0), AMAX_STATE, float(amax))
    scale = np.float32(scale_from_amax(float(amax)))
    current = scale_of(quantize)
    if current is not None and current.shape == () and np.float32(current) == scale:
        return False
    rewriter.set_scale(quantize, scale)
    return True

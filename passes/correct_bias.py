"""correct-bias: empirical bias correction (Nagel et al. 2019, section 4.2) from calibration data.

Quantization shifts the mean of a conv's output: weight rounding errors that do not cancel over few weights
(a depthwise 3x3 has nine per channel), and activations clipped at an amax below their maximum. The next
layers see the shift as a bias. This pass runs the float model and the Q/DQ model over calibration samples,
measures each Conv output's per-channel mean in both, and adds the difference to the conv's bias, so the
quantized model's conv outputs have the float model's means. Corrections of one conv change what the
layers after it see, so the measurement repeats (`iterations`); each round runs the Q/DQ model once.

It runs after the scales are set (calibrate or import-scales) and before fold-scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdq_compiler.calib import open_calibration_data
from qdq_compiler.calib.channel_means import channel_means
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import to_proto
from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.state import value_state
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.activation_scales import AMAX_STATE, activation_quantizers
from qdq_compiler.quant.float_view import float_view
from qdq_compiler.rewrite import Rewriter


@register_pass
class CorrectBias(Pass):
    """Match each Conv output's per-channel mean in the Q/DQ model to the float model's."""

    name = "correct-bias"
    summary = (
        "Empirical bias correction: shift each Conv's bias so its output's per-channel mean over the "
        "calibration data matches the float model's (after calibrate, before fold-scales)."
    )

    @dataclass(frozen=True)
    class Options:
        samples: int = 16  # calibration batches read per measurement
        iterations: int = 2  # measure-and-correct rounds (later layers see earlier corrections)

        def __post_init__(self) -> None:
            if self.samples < 1:
                raise ValueError(f"samples must be at least 1, got {self.samples}")
            if self.iterations < 1:
                raise ValueError(f"iterations must be at least 1, got {self.iterations}")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        convs = [node for node in model.graph if _correctable(node)]
        result = PassResult(modified=False)
        if not convs or not activation_quantizers(model.graph):
            return result
        unscaled = [q.name for q in activation_quantizers(model.graph) if not _calibrated(q)]
        if unscaled:
            raise QdqcError(
                f"correct-bias needs calibrated scales, but {len(unscaled)} activation quantizer(s) have "
                f"none (first: {unscaled[0]!r}): put it after calibrate or import-scales"
            )
        if ctx.calibration_data is None:
            raise QdqcError("correct-bias needs calibration data (--calib DATA)")
        outputs = [conv.outputs[0].name or "" for conv in convs]
        reference_model = float_view(model)
        data = open_calibration_data(ctx.calibration_data, reference_model)
        if not data.reiterable:
            ctx.logger.warning(
                "correct-bias: the calibration data can be read only once; biases left as they are"
            )
            return result
        reference = channel_means(reference_model, outputs, data, limit=self.options.samples)
        rewriter = Rewriter(model.graph)
        for _round in range(self.options.iterations):
            quantized = channel_means(to_proto(model), outputs, data, limit=self.options.samples)
            for conv, name in zip(convs, outputs, strict=True):
                shift = reference[name] - quantized[name]
                if np.any(shift != 0):
                    _add_to_bias(conv, shift, rewriter)
            rewriter.count("num-rounds")
        rewriter.count("num-convs-corrected", len(convs))
        rewriter.remove_unused_initializers()
        result.modified = rewriter.modified
        result.statistics.update(rewriter.statistics)
        return result


def _calibrated(quantize: ir.Node) -> bool:
    source = quantize.inputs[0]
    return source is not None and value_state(source, AMAX_STATE) is not None


def _correctable(node: ir.Node) -> bool:
    """A Conv with a constant (or absent) bias and a named output of known channel count."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or not node.outputs[0].name:
        return False
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        return constant_array(node.inputs[2]) is not None
    return True


def _add_to_bias(conv: ir.Node, shift: np.ndarray, rewriter: Rewriter) -> None:
    """bias += shift (a new initializer; a bias shared with another conv is left alone)."""
    current = constant_array(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
    dtype = current.dtype if current is not None else np.float32
    base = np.zeros(shift.shape) if current is None else current.astype(np.float64).reshape(-1)
    name = conv.inputs[2].name if current is not None and conv.inputs[2] is not None else f"{conv.name}.bias"
    name = (name or f"{conv.name}.bias").removesuffix("_corrected")
    corrected = rewriter.add_constant((base + shift).astype(dtype), f"{name}_corrected")
    rewriter.set_input(conv, 2, corrected)

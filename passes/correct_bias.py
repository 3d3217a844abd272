"""correct-bias: empirical bias correction (Nagel et al. 2019, section 4.2) from calibration data.

Quantization shifts the mean of a conv's output: weight rounding errors that do not cancel over few weights
(a depthwise 3x3 has nine per channel), and activations clipped at an amax below their maximum. The next
layers see the shift as a bias. This pass runs the float model and the Q/DQ model over calibration samples,
measures each Conv output's per-channel mean, and adds the difference to the conv's bias, so the
quantized model's conv outputs have the float model's means. Corrections of one conv change what the
layers after it see, so the measurement repeats (`iterations`); each round runs the Q/DQ model once.

It runs after the scales are set (calibrate or import-scales) and before fold-scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from qdq_compiler.calib import open_calibration_data
from qdq_compiler.calib.channel_means import channel_means
from qdq_compiler.errors import QdqcError
from qdq_compiler.ir import to_proto
from qdq_compiler.ir.editing import constant_array
from qdq_compiler.ir.state import value_state
from qdq_compiler.pm import Pass, PassContext, PassResult, register_pass
from qdq_compiler.quant.activation_scales import AMAX_STATE, activation_quantizers
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
        iterations: int = 1  # measure-and-correct rounds (measured: 2 rounds lose 3 dB on the classifier)

        def __post_init__(self) -> None:
            if self.samples < 1:
                raise ValueError(f"samples must be at least 1, got {self.samples}")
            if self.iterations < 1:
                raise ValueError(f"iterations must be at least 1, got {self.iterations}")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        convs = [node for node in model.graph if _correctable(node)]
        result = PassResult(modified=False)
        quantizers = activation_quantizers(model.graph)
        if not convs or not quantizers:
            return result
        unscaled = [q.name for q in quantizers if not _calibrated(q)]
        if unscaled:
            raise QdqcError(
                f"correct-bias needs calibrated scales, but {len(unscaled)} activation quantizer(s) have "
                f"none (first: {unscaled[0]!r}): put it after calibrate or import-scales"
            )
        if ctx.calibration_data is None:
            raise QdqcError("correct-bias needs calibration data (--calib DATA)")
        outputs = [conv.outputs[0].name or "" for conv in convs]
        proto = to_proto(model)  # the model the first round measures; its inputs are the data's
        data = open_calibration_data(ctx.calibration_data, proto)
        if not data.reiterable:
            ctx.logger.warning(
                "correct-bias: the calibration data can be read only once; biases left as they are"
            )
            return result
        rewriter = Rewriter(model.graph)
        original = {id(conv): _bias_of(conv) for conv in convs}
        for round_index in range(self.options.iterations):
            if round_index:
                proto = to_proto(model)  # with the previous round's biases
            measured, references = with_reference_convs(proto, outputs)
            means = channel_means(measured, outputs + references, data, limit=self.options.samples)
            for conv, name, reference in zip(convs, outputs, references, strict=True):
                shift = means[reference] - means[name]  # the twin has the same bias: it cancels
                if np.any(shift != 0):
                    _set_bias(conv, original[id(conv)], shift, rewriter)
            rewriter.count("num-rounds")
        rewriter.count("num-convs-corrected", len(convs))
        rewriter.remove_unused_initializers()
        result.modified = rewriter.modified
        result.statistics.update(rewriter.statistics)
        return result


def with_reference_convs(proto: onnx.ModelProto, outputs: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of the Q/DQ model where each Conv producing one of `outputs` has a float twin: the same Conv
    reading the float tensors behind its input and weight Q->DQ pairs. Returns the copy and the twins'
    output names, in the order of `outputs`.

    The twin computes what the layer would compute without its own quantization, given the inputs it
    sees in the quantized model; the difference of the two means is this layer's own bias (upstream
    errors reach both alike), so correcting every layer at once does not count an error twice.
    """
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    producer = {name: node for node in work.graph.node for name in node.output}

    def float_source(name: str) -> str:
        dequantize = producer.get(name)
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            return name
        quantize = producer.get(dequantize.input[0])
        return quantize.input[0] if quantize is not None and quantize.op_type == "QuantizeLinear" else name

    twins = []
    for output in outputs:
        conv = producer[output]
        twin = onnx.NodeProto()
        twin.CopyFrom(conv)
        twin.name = f"{conv.name}__float_twin"
        twin.input[0] = float_source(conv.input[0])
        twin.input[1] = float_source(conv.input[1])
        twin.output[0] = f"{output}__float_twin"
        work.graph.node.append(twin)
        twins.append(twin.output[0])
    return work, twins


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


def _bias_of(conv: ir.Node) -> np.ndarray | None:
    """The conv's constant bias (None when it has none)."""
    return constant_array(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None


def _set_bias(conv: ir.Node, original: np.ndarray | None, shift: np.ndarray, rewriter: Rewriter) -> None:
    """bias = original + shift, as a new initializer (a bias shared with another conv is left alone)."""
    dtype = original.dtype if original is not None else np.float32
    base = np.zeros(shift.shape) if original is None else original.astype(np.float64).reshape(-1)
    current = conv.inputs[2] if len(conv.inputs) > 2 else None
    name = (current.name if current is not None and current.name else f"{conv.name}.bias").removesuffix(
        "_corrected"
    )
    rewriter.set_input(conv, 2, rewriter.add_constant((base + shift).astype(dtype), f"{name}_corrected"))

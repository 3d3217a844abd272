"""The output SQNR a Q/DQ model should reach, derived from its quantization grid.

Model: every activation quantizer and every quantized weight adds its own rounding noise. For a tensor x
quantized with step s (the scale) and the range [s*(qmin-zp), s*(qmax-zp)], a value inside the range gets
an error uniform in [-s/2, s/2] (power s**2/12) and a value outside it the clipping error (x - clamp(x))**2.
The tensor's relative noise is r = mean(error power) / mean(x**2), computed from the values the model's
quantizers actually see on the given batches. Weights are charged the worst case (s/2)**2 per value
instead of s**2/12: a weight tensor has few values (often one per output channel), fixed once, so their
errors need not average out; per-channel steps against the dequantized weights.
The float arithmetic adds its own (it matters for unquantized layers, folded BatchNorms, float16): a dot
product of n terms has relative error at most n*eps against sum(|a_i*b_i|), which for terms of random sign
is sqrt(n) times the result; each node is charged (n**1.5 * eps)**2 with n the longest dot product in the
model and eps the machine epsilon of its float type.

A layer with normalised weights carries its input's relative noise to its output about unchanged (signal
and noise pass the same gain), so the relative noises of the L quantized tensors add up at an output:
R = sum(r_i), predicted SQNR = -10 log10(R). Two effects can make the real noise larger: the noises of
different tensors can add coherently rather than in power (at worst the amplitudes add: R_coherent =
(sum(sqrt(r_i)))**2 <= L * R), and a path can amplify noise relative to signal (a BatchNorm that removes a
large mean, a residual Add or a head whose terms cancel). :func:`sqnr_floor_db` takes the coherent sum
less the largest such gain, which :func:`noise_gain` measures on the float model by perturbing each
weighted layer in turn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from qdq_compiler.ir.op_facts import DEFAULT_QDQ_AXIS
from qdq_compiler.quant.grid import integer_range

__all__ = [
    "NoiseBudget",
    "noise_budget",
    "noise_gain",
    "sqnr_floor_db",
    "tensor_values",
    "weight_noise",
    "with_weights_of",
]

_INTEGER_RANGE: dict[int, tuple[int, int]] = {
    data_type: integer_range(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    for data_type in (
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.INT32,
    )
}


@dataclass(frozen=True)
class NoiseBudget:
    """Relative noise power (noise / signal) of every quantized tensor, by tensor name."""

    activations: dict[str, float]
    weights: dict[str, float]
    float_rounding: float = 0.0  # the float arithmetic's own, see the module docstring

    @property
    def count(self) -> int:
        return len(self.activations) + len(self.weights)

    def _terms(self) -> list[float]:
        return [*self.activations.values(), *self.weights.values(), self.float_rounding]

    def incoherent_db(self) -> float:
        """-10 log10(sum r_i): the SQNR when the noises add in power and pass with unit gain."""
        total = sum(self._terms())
        return math.inf if total <= 0.0 else -10.0 * math.log10(total)

    def coherent_db(self) -> float:
        """-10 log10((sum sqrt(r_i))**2): the SQNR when the noise amplitudes add, with unit gain."""
        total = sum(math.sqrt(r) for r in self._terms()) ** 2
        return math.inf if total <= 0.0 else -10.0 * math.log10(total)


def with_weights_of(budget: NoiseBudget, source: onnx.ModelProto) -> NoiseBudget:
    """``budget`` plus the weight noise of the model it was made from (an imported Q/DQ model whose INT8
    weights came back as float: their rounding is in the output even where no DQ is left)."""
    weights = dict(budget.weights) | {f"source:{name}": r for name, r in weight_noise(source).items()}
    return NoiseBudget(budget.activations, weights, budget.float_rounding)


def sqnr_floor_db(budget: NoiseBudget, noise_gain: float = 1.0) -> float:
    """The SQNR an output must reach: the coherent prediction less ``10 log10(noise_gain)``.

    ``noise_gain`` is how much a path from a quantizer to the output amplifies relative noise
    (see :func:`noise_gain`); values below 1 count as 1.
    """
    return budget.coherent_db() - 10.0 * math.log10(max(1.0, noise_gain))


def noise_gain(
    model: onnx.ModelProto,
    batches: Sequence[Mapping[str, np.ndarray]],
    relative_noise: float = 1e-6,
    draws: int = 3,
    seed: int = 0,
) -> float:
    """The largest relative-noise gain from one weighted layer of a float ``model`` to its first output.

    Each weight tensor (an initializer of rank >= 2) in turn gets Gaussian noise of relative power
    ``relative_noise``; the output's relative noise divided by it is that layer's gain (1 for a layer
    passing noise and signal alike; more where a later BatchNorm, Add or head cancels signal but not
    noise). Noise that enters at a layer's input (activation rounding) travels the same path from the
    layer on. The maximum is taken over ``draws`` seeded Gaussian draws per layer and one uniform shift of
    every weight: the direction of the input's mean, which for non-negative inputs (after a Relu, image
    data) is the direction the layer amplifies most, and along which rounding errors of a few weights can
    line up. The graph inputs are perturbed the same way (the path of the input quantizer's noise).
    The perturbation is small enough to stay linear and large enough (60 dB) to stand well above
    float32 rounding.
    """
    from qdq_compiler.accuracy.numerics import run_outputs

    rng = np.random.default_rng(seed)
    output = model.graph.output[0].name
    reference = run_outputs(model, batches)[output].astype(np.float64)
    power = float(np.mean(reference**2))
    if power == 0.0:
        return 1.0
    worst = 1.0
    for index, init in enumerate(model.graph.initializer):
        if len(init.dims) < 2 or init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        weight = numpy_helper.to_array(init)
        scale = math.sqrt(relative_noise * float(np.mean(weight.astype(np.float64) ** 2)))
        shifts = [rng.standard_normal(weight.shape) for _ in range(draws)] + [np.ones(weight.shape)]
        for shift in shifts:
            noisy = onnx.ModelProto()
            noisy.CopyFrom(model)
            perturbed = weight + shift * scale
            noisy.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(perturbed.astype(weight.dtype), init.name)
            )
            out = run_outputs(noisy, batches)[output].astype(np.float64)
            worst = max(worst, float(np.mean((out - reference) ** 2)) / power / relative_noise)
    for name in {value.name for value in model.graph.input} & set(batches[0]):  # the input quantizer's path
        data = [batch[name].astype(np.float64) for batch in batches]
        scale = math.sqrt(relative_noise * float(np.mean(np.concatenate([d.ravel() for d in data]) ** 2)))
        for draw in range(draws + 1):
            noisy_batches = [
                {
                    **batch,
                    name: (d + scale * (rng.standard_normal(d.shape) if draw < draws else 1.0)).astype(
                        batch[name].dtype
                    ),
                }
                for batch, d in zip(batches, data)
            ]
            out = run_outputs(model, noisy_batches)[output].astype(np.float64)
            worst = max(worst, float(np.mean((out - reference) ** 2)) / power / relative_noise)
    return worst


def noise_budget(model: onnx.ModelProto, batches: Sequence[Mapping[str, np.ndarray]]) -> NoiseBudget:
    """Every quantizer's relative noise in ``model`` (a Q/DQ model onnxruntime runs) on ``batches``."""
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    activation_qs = [
        node for node in graph.node if node.op_type == "QuantizeLinear" and node.input[0] not in constants
    ]
    values = tensor_values(model, [q.input[0] for q in activation_qs], batches)
    activations: dict[str, float] = {}
    for q in activation_qs:
        scale = numpy_helper.to_array(constants[q.input[1]]).astype(np.float64)
        zero_point, (qmin, qmax) = _zero_point_and_range(q, constants)
        x = values[q.input[0]].astype(np.float64)
        axis = _axis(q)
        shape = [1] * x.ndim
        if scale.size > 1:
            shape[axis] = -1
        s, zp = scale.reshape(shape), zero_point.reshape(shape) if zero_point.size > 1 else zero_point
        low, high = s * (qmin - zp), s * (qmax - zp)
        inside = (x >= low) & (x <= high)
        error = np.where(inside, np.broadcast_to(s**2 / 12.0, x.shape), (x - np.clip(x, low, high)) ** 2)
        activations[q.input[0]] = _ratio(float(error.mean()), float(np.mean(x**2)))
    rounding = len(graph.node) * (_longest_sum(model) ** 1.5 * _epsilon(model)) ** 2
    return NoiseBudget(activations, weight_noise(model), rounding)


def weight_noise(model: onnx.ModelProto) -> dict[str, float]:
    """Relative noise of every quantized constant of ``model`` (a DequantizeLinear of an integer constant).

    INT32 biases count too, against their own power (conservative: the layer's output is usually larger).
    Their step s_in * s_w is negligible unless an input scale is degenerate (onnxruntime gives an all-zero
    tensor scale 1), and then it is the largest error of the model."""
    constants = {init.name: init for init in model.graph.initializer}
    weights: dict[str, float] = {}
    for dq in model.graph.node:
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in constants:
            continue
        data = numpy_helper.to_array(constants[dq.input[0]])
        scale = numpy_helper.to_array(constants[dq.input[1]]).astype(np.float64)
        zero_point, _ = _zero_point_and_range(dq, constants)
        shape = [1] * data.ndim
        if scale.size > 1:
            shape[_axis(dq) % data.ndim] = -1
        s = np.broadcast_to(scale.reshape(shape), data.shape)
        zp = zero_point.reshape(shape) if zero_point.size > 1 else zero_point
        w = (data.astype(np.float64) - zp) * s
        weights[dq.input[0]] = _ratio(float(np.mean(s**2 / 4.0)), float(np.mean(w**2)))
    return weights


def _longest_sum(model: onnx.ModelProto) -> int:
    """The longest dot product a weighted node computes (its weight's size over the output channels)."""
    sizes = [1]
    for init in model.graph.initializer:
        dims = list(init.dims)
        if len(dims) >= 2:
            sizes.append(int(np.prod(dims)) // max(dims[0], 1) if len(dims) > 2 else max(dims))
    return max(sizes)


def _epsilon(model: onnx.ModelProto) -> float:
    """Machine epsilon of the model's float type (its first input's): float16 when that is float16."""
    elem_type = model.graph.input[0].type.tensor_type.elem_type if model.graph.input else 0
    return float(np.finfo(np.float16 if elem_type == onnx.TensorProto.FLOAT16 else np.float32).eps)


def _ratio(noise: float, signal: float) -> float:
    """noise / signal; a silent tensor (signal 0) quantizes exactly (0 is on every grid): no noise."""
    return noise / signal if signal > 0.0 else 0.0


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), DEFAULT_QDQ_AXIS)


def _zero_point_and_range(
    node: onnx.NodeProto, constants: Mapping[str, onnx.TensorProto]
) -> tuple[np.ndarray, tuple[int, int]]:
    """The node's zero point as float64 and its integer range (an absent zero point means uint8, 0)."""
    if len(node.input) > 2 and node.input[2]:
        tensor = constants[node.input[2]]
        return numpy_helper.to_array(tensor).astype(np.float64), _INTEGER_RANGE[tensor.data_type]
    return np.zeros(1), _INTEGER_RANGE[onnx.TensorProto.UINT8]


def tensor_values(
    model: onnx.ModelProto, names: Sequence[str], batches: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The values of ``names`` (any tensors of ``model``) over ``batches``, concatenated on axis 0."""
    from qdq_compiler.accuracy.numerics import run_outputs

    inputs = {value.name for value in model.graph.input}
    found = {name: np.concatenate([batch[name] for batch in batches]) for name in names if name in inputs}
    wanted = [name for name in dict.fromkeys(names) if name not in inputs]
    if not wanted:
        return found
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {out.name for out in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in wanted if name not in present)
    outputs = run_outputs(probe, batches)
    return found | {name: outputs[name] for name in wanted}

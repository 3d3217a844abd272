"""Random valid CNN graphs for fuzzing the compiler.

Every decision goes through a :class:`Chooser`, so one generator serves two drivers: the hypothesis
strategy of ``tests/test_fuzz.py`` (whose chooser draws from hypothesis, which can then shrink a failing
graph to a small one) and :class:`RandomChooser` (a seeded numpy generator, no hypothesis needed). Weights
come from a numpy generator seeded by one choice, so a graph is fully described by its choices.

The graphs are small (at most 8 channels, 16x16 pixels) so each one compiles and runs in well under a
second. They use each op in the form of the drawn opset (Clip bounds and Pad pads as inputs from 11, Split
sizes as an input from 13, HardSwish from 14, Resize's roi input before 13) and may be float16 throughout.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "ALL_FEATURES",
    "Chooser",
    "Features",
    "HypothesisChooser",
    "RandomChooser",
    "RandomCnn",
    "describe",
    "random_cnn",
]

T = TypeVar("T")
MIN_OPSET, MAX_OPSET = 11, 19
MAX_CHANNELS = 8
MAX_SIDE = 16


class Chooser(Protocol):
    """The source of every random decision the generator makes."""

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]`` (both included); shrinking drivers prefer ``low``."""
        ...

    def choice(self, options: Sequence[T]) -> T:
        """One of ``options``; shrinking drivers prefer the first."""
        ...


class RandomChooser:
    """A :class:`Chooser` over a seeded numpy generator."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def choice(self, options: Sequence[T]) -> T:
        return options[int(self.rng.integers(len(options)))]


@dataclass(frozen=True)
class Features:
    """Which constructs the generator may use. Drivers turn one off while a known bug in it is open."""

    float16: bool = True
    float16_below_opset_19: bool = True  # Q/DQ of float16 needs opset 19 (issue 12 item 2d)
    wide_range_concat: bool = True  # Concat of branches whose ranges differ by 10**2..10**4 (item 2a)
    matmul_rank4_weight: bool = True  # MatMul weight of shape [1, 1, K, M] (item 2f)
    shared_weights: bool = True
    zero_weight_channel: bool = True  # a conv output channel whose weights are all zero (item 2e)


ALL_FEATURES = Features()


@dataclass
class RandomCnn:
    """A generated model, the choices that describe it, and how to make calibration data for it."""

    model: onnx.ModelProto
    description: list[str]
    opset: int
    float16: bool
    data_seed: int
    data_low: float
    data_high: float

    def calibration_batches(self, count: int) -> list[dict[str, np.ndarray]]:
        """``count`` seeded batches uniform in ``[data_low, data_high]``, one sample each."""
        rng = np.random.default_rng(self.data_seed)
        value = self.model.graph.input[0]
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        dtype = np.float16 if self.float16 else np.float32
        return [
            {value.name: rng.uniform(self.data_low, self.data_high, dims).astype(dtype)} for _ in range(count)
        ]


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, int, int]  # C, H, W (the batch is always 1)


@dataclass
class _Net:
    """The graph being built: nodes, initializers, the opset and element type, and a weight generator."""

    choose: Chooser
    features: Features
    opset: int
    float16: bool
    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    description: list[str] = field(default_factory=list)
    conv_weights: dict[tuple[int, ...], str] = field(default_factory=dict)
    count: int = 0

    @property
    def elem_type(self) -> int:
        return TensorProto.FLOAT16 if self.float16 else TensorProto.FLOAT

    @property
    def np_type(self) -> type:
        return np.float16 if self.float16 else np.float32

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def constant(self, stem: str, value: np.ndarray) -> str:
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def floats(self, stem: str, value: np.ndarray) -> str:
        return self.constant(stem, np.asarray(value).astype(self.np_type))

    def node(self, op: str, inputs: list[str], stem: str, outputs: int = 1, **attrs) -> list[str]:
        names = [self.fresh(stem) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=self.fresh(op), **attrs))
        return names

    # ------------------------------------------------------------------ layers
    def conv(self, x: _Tensor, out_channels: int | None = None, gain: float = 1.0) -> _Tensor:
        c, h, w = x.shape
        k = self.choose.choice([1, 3]) if min(h, w) >= 3 else 1
        stride = self.choose.choice([1, 2]) if min(h, w) >= 4 else 1
        groups = 1
        if out_channels is None:
            form = self.choose.choice(["dense", "depthwise", "grouped"])
            if form == "depthwise":
                groups, out_channels = c, c
            else:
                out_channels = self.choose.integer(1, MAX_CHANNELS)
                if form == "grouped":
                    common = [g for g in range(2, c + 1) if c % g == 0 and out_channels % g == 0]
                    groups = self.choose.choice(common) if common else 1
        pad = k // 2
        shape = (out_channels, c // groups, k, k)
        weight_name = self.conv_weights.get(shape) if self.features.shared_weights and gain == 1.0 else None
        if weight_name is not None and self.choose.choice([False, True]):
            self.description.append(f"conv {shape} shares weights {weight_name}")
        else:
            fan_in = (c // groups) * k * k
            weight = self.rng.standard_normal(shape) * (gain * math.sqrt(2.0 / fan_in))
            if self.features.zero_weight_channel and out_channels > 1 and self.choose.integer(0, 7) == 7:
                weight[0] = 0.0
                self.description.append("conv with an all-zero output channel")
            weight_name = self.floats("w", weight)
            self.conv_weights.setdefault(shape, weight_name)
        inputs = [x.name, weight_name]
        if self.choose.choice([True, False]):
            inputs.append(self.floats("b", self.rng.standard_normal(out_channels) * 0.1 * gain))
        (y,) = self.node(
            "Conv",
            inputs,
            "conv",
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=groups,
        )
        out = _Tensor(y, (out_channels, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1))
        self.description.append(f"Conv k{k} s{stride} g{groups} {x.shape} -> {out.shape}")
        if self.choose.choice([False, True]):
            out = self.batch_norm(out)
        return out

    def batch_norm(self, x: _Tensor) -> _Tensor:
        c = x.shape[0]
        scale = self.floats("bn_scale", self.rng.uniform(0.5, 1.5, c))
        bias = self.floats("bn_bias", self.rng.standard_normal(c) * 0.2)
        mean = self.floats("bn_mean", self.rng.standard_normal(c) * 0.3)
        var = self.floats("bn_var", self.rng.uniform(0.5, 2.0, c))
        (y,) = self.node("BatchNormalization", [x.name, scale, bias, mean, var], "bn", epsilon=1e-5)
        self.description.append("BatchNormalization")
        return _Tensor(y, x.shape)

    def activation(self, x: _Tensor) -> _Tensor:
        kinds = ["Relu", "LeakyRelu", "Sigmoid", "SiLU", "Clip", "none"]
        if self.opset >= 14:
            kinds.insert(-1, "HardSwish")
        kind = self.choose.choice(kinds)
        if kind == "none":
            return x
        self.description.append(kind)
        if kind == "SiLU":
            (s,) = self.node("Sigmoid", [x.name], "sig")
            (y,) = self.node("Mul", [x.name, s], "silu")
        elif kind == "Clip":
            low, high = self.choose.choice([(0.0, 6.0), (-1.0, 1.0)])
            bounds = [self.floats("clip_min", np.array(low)), self.floats("clip_max", np.array(high))]
            (y,) = self.node("Clip", [x.name, *bounds], "clip")
        elif kind == "LeakyRelu":
            (y,) = self.node("LeakyRelu", [x.name], "leaky", alpha=0.1)
        else:
            (y,) = self.node(kind, [x.name], kind.lower())
        return _Tensor(y, x.shape)

    def conv_transpose(self, x: _Tensor) -> _Tensor:
        c, h, w = x.shape
        out_channels = self.choose.integer(1, MAX_CHANNELS)
        k, stride, pad = (
            (2, 2, 0) if max(h, w) * 2 <= MAX_SIDE and self.choose.choice([True, False]) else (3, 1, 1)
        )
        weight = self.rng.standard_normal((c, out_channels, k, k)) * math.sqrt(2.0 / (c * k * k / stride**2))
        inputs = [x.name, self.floats("wt", weight)]
        if self.choose.choice([True, False]):
            inputs.append(self.floats("bt", self.rng.standard_normal(out_channels) * 0.1))
        (y,) = self.node(
            "ConvTranspose", inputs, "deconv", kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4
        )
        out = _Tensor(y, (out_channels, (h - 1) * stride - 2 * pad + k, (w - 1) * stride - 2 * pad + k))
        self.description.append(f"ConvTranspose k{k} s{stride} {x.shape} -> {out.shape}")
        return out

    def pool(self, x: _Tensor) -> _Tensor:
        c, h, w = x.shape
        op = self.choose.choice(["MaxPool", "AveragePool"])
        if min(h, w) >= 2 and self.choose.choice([True, False]):
            k, s, p = 2, 2, 0
        else:
            k, s, p = 3, 1, 1
        attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}
        if op == "AveragePool":
            attrs["count_include_pad"] = 1
        (y,) = self.node(op, [x.name], op.lower(), **attrs)
        out = _Tensor(y, (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1))
        self.description.append(f"{op} k{k} s{s} -> {out.shape}")
        return out

    def residual(self, x: _Tensor) -> _Tensor:
        branch = self.activation(self.conv_same(x))
        (y,) = self.node("Add", [x.name, branch.name], "add")
        self.description.append("residual Add")
        return _Tensor(y, x.shape)

    def conv_same(self, x: _Tensor, gain: float = 1.0) -> _Tensor:
        """A stride-1 'same' conv keeping the channel count (for residual branches)."""
        c, h, w = x.shape
        k = self.choose.choice([1, 3]) if min(h, w) >= 3 else 1
        shape = (c, c, k, k)
        shared = self.conv_weights.get(shape) if self.features.shared_weights and gain == 1.0 else None
        if shared is not None and self.choose.choice([False, True]):
            weight_name = shared
            self.description.append(f"residual conv shares weights {shared}")
        else:
            weight = self.rng.standard_normal(shape) * (0.5 * gain * math.sqrt(2.0 / (c * k * k)))
            weight_name = self.floats("w", weight)
            self.conv_weights.setdefault(shape, weight_name)
        (y,) = self.node("Conv", [x.name, weight_name], "conv", kernel_shape=[k, k], pads=[k // 2] * 4)
        self.description.append(f"Conv k{k} same {x.shape}")
        return _Tensor(y, x.shape)

    def concat(self, x: _Tensor) -> _Tensor:
        """Concat of a conv and a conv of it, the second scaled by 10**e (e > 0: very different ranges)."""
        first = self.activation(self.conv(x, out_channels=self.choose.integer(1, MAX_CHANNELS // 2)))
        exponent = self.choose.choice([0, 2, 4]) if self.features.wide_range_concat else 0
        second = self.conv(first, out_channels=self.choose.integer(1, MAX_CHANNELS // 2), gain=10.0**exponent)
        if second.shape[1:] != first.shape[1:]:
            second, first = first, x  # the second conv changed the size: concat the input and its conv
            if second.shape[1:] != first.shape[1:]:
                return second
        (y,) = self.node("Concat", [first.name, second.name], "concat", axis=1)
        self.description.append(f"Concat (range ratio 1e{exponent})")
        return _Tensor(y, (first.shape[0] + second.shape[0], *first.shape[1:]))

    def split(self, x: _Tensor) -> _Tensor:
        c, h, w = x.shape
        if c < 2:
            return self.activation(x)
        first = self.choose.integer(1, c - 1)
        sizes = [first, c - first]
        if self.opset >= 13:
            parts = self.node(
                "Split",
                [x.name, self.constant("split", np.array(sizes, np.int64))],
                "part",
                outputs=2,
                axis=1,
            )
        else:
            parts = self.node("Split", [x.name], "part", outputs=2, axis=1, split=sizes)
        a = self.activation(_Tensor(parts[0], (first, h, w)))
        b = (
            self.conv(_Tensor(parts[1], (c - first, h, w)), out_channels=c - first)
            if min(h, w) >= 4
            else _Tensor(parts[1], (c - first, h, w))
        )
        if b.shape[1:] != (h, w):
            b = _Tensor(parts[1], (c - first, h, w))
        (y,) = self.node("Concat", [a.name, b.name], "concat", axis=1)
        self.description.append(f"Split {sizes} and Concat")
        return _Tensor(y, (a.shape[0] + b.shape[0], h, w))

    def resize(self, x: _Tensor) -> _Tensor:
        c, h, w = x.shape
        if max(h, w) * 2 > MAX_SIDE:
            return self.pool(x)
        scales = self.constant("scales", np.array([1, 1, 2, 2], np.float32))
        roi = self.constant("roi", np.zeros(0, np.float32)) if self.opset < 13 else ""
        mode = self.choose.choice(["nearest", "linear"])
        attrs: dict[str, Any] = {"mode": mode}
        if mode == "nearest":
            attrs.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        (y,) = self.node("Resize", [x.name, roi, scales], "resize", **attrs)
        self.description.append(f"Resize x2 {mode}")
        return _Tensor(y, (c, 2 * h, 2 * w))

    def pad_then_conv(self, x: _Tensor) -> _Tensor:
        c, h, w = x.shape
        pads = self.constant("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
        (y,) = self.node("Pad", [x.name, pads], "pad", mode="constant")
        self.description.append("Pad 1")
        padded = _Tensor(y, (c, h + 2, w + 2))
        out_channels = self.choose.integer(1, MAX_CHANNELS)
        weight = self.rng.standard_normal((out_channels, c, 3, 3)) * math.sqrt(2.0 / (c * 9))
        (z,) = self.node("Conv", [padded.name, self.floats("w", weight)], "conv", kernel_shape=[3, 3])
        self.description.append("Conv k3 valid")
        return _Tensor(z, (out_channels, h, w))

    def reshape_or_transpose(self, x: _Tensor) -> _Tensor:
        c, h, w = x.shape
        if self.choose.choice(["transpose", "reshape"]) == "transpose":
            (y,) = self.node("Transpose", [x.name], "transpose", perm=[0, 1, 3, 2])
            self.description.append("Transpose H<->W")
            return _Tensor(y, (c, w, h))
        shape = self.constant("shape", np.array([1, c, h * w, 1], np.int64))
        (y,) = self.node("Reshape", [x.name, shape], "reshape")
        self.description.append("Reshape to [1, C, H*W, 1]")
        return _Tensor(y, (c, h * w, 1))

    def spatial_matmul(self, x: _Tensor) -> _Tensor:
        """x[1, C, H, W] @ W[W, M] (or [1, 1, W, M]): a MatMul on a rank-4 activation."""
        c, h, w = x.shape
        m = self.choose.integer(1, MAX_SIDE // 2)
        weight = self.rng.standard_normal((w, m)) * math.sqrt(1.0 / w)
        if self.features.matmul_rank4_weight and self.choose.choice([False, True]):
            weight = weight[None, None]
        (y,) = self.node("MatMul", [x.name, self.floats("wm", weight)], "matmul")
        self.description.append(f"MatMul weight {list(weight.shape)}")
        return _Tensor(y, (c, h, m))

    def head(self, x: _Tensor) -> tuple[str, list[int]]:
        """GlobalAveragePool + Flatten + Gemm (or MatMul + Add) to a few classes, or no head."""
        kind = self.choose.choice(["none", "gemm", "matmul"])
        if kind == "none":
            return x.name, [1, *x.shape]
        (pooled,) = self.node("GlobalAveragePool", [x.name], "gap")
        (flat,) = self.node("Flatten", [pooled], "flat", axis=1)
        c, classes = x.shape[0], self.choose.integer(1, 10)
        weight = self.rng.standard_normal((c, classes)) * math.sqrt(1.0 / c)
        bias = self.floats("fc_b", self.rng.standard_normal(classes) * 0.1)
        if kind == "gemm":
            (y,) = self.node("Gemm", [flat, self.floats("fc_w", weight), bias], "gemm")
        else:
            (mm,) = self.node("MatMul", [flat, self.floats("fc_w", weight)], "fc")
            (y,) = self.node("Add", [mm, bias], "fc_add")
        self.description.append(f"head GlobalAveragePool + {kind} -> {classes}")
        return y, [1, classes]


BLOCKS = (
    "conv",
    "conv_transpose",
    "pool",
    "residual",
    "concat",
    "split",
    "resize",
    "pad",
    "reshape_or_transpose",
    "matmul",
    "activation",
)


def random_cnn(choose: Chooser, features: Features = ALL_FEATURES) -> RandomCnn:
    """A random valid CNN: 1-6 blocks over a small NCHW input, then an optional classifier head."""
    opset = choose.integer(MIN_OPSET, MAX_OPSET)
    float16 = features.float16 and choose.choice([False, True])
    if float16 and not features.float16_below_opset_19:
        opset = MAX_OPSET
    net = _Net(choose, features, opset, float16, np.random.default_rng(choose.integer(0, 2**31 - 1)))
    net.description.append(f"opset {opset}, {'float16' if float16 else 'float32'}")
    channels, side = choose.integer(1, 4), choose.integer(4, 12)
    x = _Tensor("input", (channels, side, choose.integer(4, 12)))
    input_shape = [1, *x.shape]
    net.description.append(f"input {input_shape}")
    x = net.activation(net.conv(x))  # every graph has at least one weighted layer to quantize
    for _ in range(choose.integer(0, 5)):
        block = choose.choice(BLOCKS)
        if block == "conv":
            x = net.activation(net.conv(x))
        elif block == "conv_transpose":
            x = net.activation(net.conv_transpose(x))
        elif block == "pool":
            x = net.pool(x)
        elif block == "residual":
            x = net.residual(x)
        elif block == "concat":
            x = net.concat(x)
        elif block == "split":
            x = net.split(x)
        elif block == "resize":
            x = net.resize(x)
        elif block == "pad":
            x = net.activation(net.pad_then_conv(x))
        elif block == "reshape_or_transpose":
            x = net.reshape_or_transpose(x)
        elif block == "matmul":
            x = net.spatial_matmul(x)
        else:
            x = net.activation(x)
    output, output_shape = net.head(x)
    graph = helper.make_graph(
        net.nodes,
        "random_cnn",
        [helper.make_tensor_value_info("input", net.elem_type, input_shape)],
        [helper.make_tensor_value_info(output, net.elem_type, output_shape)],
        net.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="qdq_compiler.models.random_cnn"
    )
    model.ir_version = 8 if opset <= 18 else 9
    low = choose.choice([0.0, -1.0, -4.0, 0.5])
    high = low + choose.choice([1.0, 2.0, 8.0, 0.01])
    return RandomCnn(model, net.description, opset, float16, choose.integer(0, 2**31 - 1), low, high)


def describe(cnn: RandomCnn) -> str:
    """The generator's choices, one per line, for failure reports."""
    fields = {
        f.name: getattr(cnn, f.name)
        for f in dataclasses.fields(cnn)
        if f.name not in ("model", "description")
    }
    return "\n".join([*cnn.description, f"data: {fields}"])


class HypothesisChooser:
    """A :class:`Chooser` drawing from a hypothesis ``data.draw`` (hypothesis is imported only here)."""

    def __init__(self, draw):
        from hypothesis import strategies

        self.draw, self.strategies = draw, strategies

    def integer(self, low: int, high: int) -> int:
        return self.draw(self.strategies.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(self.strategies.sampled_from(list(options)))

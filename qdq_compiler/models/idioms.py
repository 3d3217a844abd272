"""Small seeded models of the idioms CNN families deployed on Jetson are built from (issue 15 item 4).

Each model is one idiom between two ordinary conv layers, on a ``[1, 3, 32, 32]`` input ``input`` with one
output ``output``, so that a test can compile it and read what placement and fusion make of the idiom:

* ``build_c2f``: YOLOv8's C2f block with shortcut: Split in halves, bottlenecks whose residual Add reads
  their input, Concat of every half and bottleneck output;
* ``build_silu``: conv layers activated by SiLU written as ``x * Sigmoid(x)`` (YOLOv5/v8 exports);
* ``build_focus``: YOLOX's Focus stem: four stride-2 Slices (or one SpaceToDepth) and a Concat;
* ``build_se``: a squeeze-excitation block (MobileNetV3): GlobalAveragePool, 1x1 conv, Relu, 1x1 conv,
  HardSigmoid, Mul with the block's input;
* ``build_hardswish``: HardSwish as the op, or as ``x * HardSigmoid(x)``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from qdq_compiler.models.builder import ACT_GAIN, GraphBuilder

INPUT_SHAPE = (1, 3, 32, 32)
HARDSWISH_GAIN = 1.0 / math.sqrt(0.3311)  # 1 / sqrt(E[hardswish(z)^2]) for z ~ N(0, 1), as ACT_GAIN


def _hard_sigmoid(v: np.ndarray) -> np.ndarray:
    return np.clip(v / 6.0 + 0.5, 0.0, 1.0)


def _start(name: str, seed: int) -> tuple[GraphBuilder, str]:
    b = GraphBuilder(name, seed=seed)
    return b, b.add_input("input", INPUT_SHAPE)


def _finish(b: GraphBuilder, x: str) -> onnx.ModelProto:
    """A closing 1x1 conv (the layer after the idiom), output named ``output``."""
    y = b.conv(x, 8, 1, 1, name="head", gain=1.0)
    b.add_output(b.rename_tensor(y, "output"))
    return b.build()


def split(b: GraphBuilder, x: str, sizes: list[int], name: str = "split") -> list[str]:
    """Split along channels into ``sizes`` (opset-13 Split with a sizes input)."""
    n, c, h, w = b.shape(x)
    if sum(sizes) != c:
        raise ValueError(f"split sizes {sizes} do not add up to {c} channels")
    sizes_const = b.const(np.asarray(sizes, np.int64), f"{name}.sizes", dtype=np.int64)
    outputs = b.node("Split", [x, sizes_const], [(n, size, h, w) for size in sizes], name=name, axis=1)
    value = b.value(x)
    if value is not None:  # keep the probe going, so BatchNormalization after it gets real statistics
        for out, part in zip(outputs, np.split(value, np.cumsum(sizes)[:-1], axis=1), strict=True):
            b.values[out] = part
    return outputs


def hard_sigmoid(b: GraphBuilder, x: str, name: str = "hardsigmoid") -> str:
    """HardSigmoid with PyTorch's constants (alpha 1/6, beta 0.5)."""
    y = b.node("HardSigmoid", [x], [b.shape(x)], name=name, alpha=1.0 / 6.0, beta=0.5)[0]
    return b._probe_op(y, _hard_sigmoid, x)


def hardswish(b: GraphBuilder, x: str, decomposed: bool = False, name: str = "hardswish") -> str:
    """HardSwish as the op, or (``decomposed``) as ``x * HardSigmoid(x)``."""
    if decomposed:
        return b.mul(x, hard_sigmoid(b, x, name=f"{name}.hardsigmoid"), name=f"{name}.mul")
    y = b.node("HardSwish", [x], [b.shape(x)], name=name)[0]
    return b._probe_op(y, lambda v: v * _hard_sigmoid(v), x)


def _bottleneck(b: GraphBuilder, x: str, shortcut: bool) -> str:
    """Two 3x3 conv-bn-silu layers, plus their input when ``shortcut`` (the residual Add of C2f)."""
    channels = b.shape(x)[1]
    y = b.conv_bn_act(x, channels, 3, name="cv1")
    y = b.conv_bn_act(y, channels, 3, name="cv2")
    return b.add(x, y, name="add") if shortcut else y


def build_c2f(
    channels: int = 16, bottlenecks: int = 2, shortcut: bool = True, seed: int = 0
) -> onnx.ModelProto:
    """Stem conv, then YOLOv8's C2f: 1x1 conv, Split in halves, ``bottlenecks`` bottlenecks chained on the
    second half (each with a residual Add when ``shortcut``), Concat of both halves and every bottleneck's
    output, 1x1 conv."""
    b, x = _start("c2f", seed)
    x = b.conv_bn_act(x, channels, 3, 2, name="stem")
    with b.scope("c2f"):
        y = b.conv_bn_act(x, 2 * channels, 1, name="cv1")
        parts = split(b, y, [channels, channels])
        for index in range(bottlenecks):
            with b.scope(f"m.{index}"):
                parts.append(_bottleneck(b, parts[-1], shortcut))
        y = b.concat(parts, axis=1, name="concat")
        y = b.conv_bn_act(y, 2 * channels, 1, name="cv2")
    return _finish(b, y)


def build_silu(channels: int = 16, layers: int = 3, seed: int = 0) -> onnx.ModelProto:
    """``layers`` conv-bn layers (the first with stride 2), each activated by ``x * Sigmoid(x)``."""
    b, x = _start("silu", seed)
    for index in range(layers):
        x = b.conv_bn_act(x, channels, 3, 2 if index == 0 else 1, act="silu", name=f"layer.{index}")
    return _finish(b, x)


def _stride2_slice(b: GraphBuilder, x: str, row: int, col: int, name: str) -> str:
    """``x[:, :, row::2, col::2]`` as one Slice with steps."""
    n, c, h, w = b.shape(x)
    ins = [
        x,
        b.const(np.asarray([row, col], np.int64), f"{name}.starts", dtype=np.int64),
        b.const(np.asarray([h, w], np.int64), f"{name}.ends", dtype=np.int64),
        b.const(np.asarray([2, 3], np.int64), f"{name}.axes", dtype=np.int64),
        b.const(np.asarray([2, 2], np.int64), f"{name}.steps", dtype=np.int64),
    ]
    out = b.node("Slice", ins, [(n, c, (h - row + 1) // 2, (w - col + 1) // 2)], name=name)[0]
    return b._probe_op(out, lambda v: v[:, :, row::2, col::2], x)


def build_focus(channels: int = 16, space_to_depth: bool = False, seed: int = 0) -> onnx.ModelProto:
    """YOLOX's Focus stem: the input's four stride-2 pixel phases (Slices with step 2, or one SpaceToDepth)
    stacked on channels, a conv-bn-silu, then a second conv-bn-silu."""
    b, x = _start("focus_s2d" if space_to_depth else "focus", seed)
    with b.scope("focus"):
        if space_to_depth:
            n, c, h, w = b.shape(x)
            y = b.node("SpaceToDepth", [x], [(n, 4 * c, h // 2, w // 2)], name="space_to_depth", blocksize=2)[
                0
            ]
            b._probe_op(y, lambda v: _space_to_depth(v), x)
        else:
            phases = [(0, 0), (1, 0), (0, 1), (1, 1)]  # YOLOX's order: top-left, bottom-left, top-right, ...
            slices = [_stride2_slice(b, x, row, col, f"slice.{i}") for i, (row, col) in enumerate(phases)]
            y = b.concat(slices, axis=1, name="concat")
        y = b.conv_bn_act(y, channels, 3, name="conv", in_act="linear")
    y = b.conv_bn_act(y, channels, 3, name="layer.1")
    return _finish(b, y)


def _space_to_depth(v: np.ndarray) -> np.ndarray:
    n, c, h, w = v.shape
    return v.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 3, 5, 1, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


def build_se(channels: int = 16, reduction: int = 4, seed: int = 0) -> onnx.ModelProto:
    """A conv-bn-relu, then a squeeze-excitation block on it: GlobalAveragePool, 1x1 conv to
    ``channels // reduction``, Relu, 1x1 conv back, HardSigmoid, Mul with the block's input; then a conv."""
    b, x = _start("se", seed)
    x = b.conv_bn_act(x, channels, 3, 2, act="relu", name="stem")
    with b.scope("se"):
        s = b.global_avg_pool(x, name="pool")
        s = b.relu(b.conv(s, channels // reduction, 1, 1, name="fc1", gain=ACT_GAIN["relu"]), name="relu")
        s = hard_sigmoid(b, b.conv(s, channels, 1, 1, name="fc2", gain=ACT_GAIN["relu"]), name="gate")
        y = b.mul(x, s, name="mul")
    y = b.conv_bn_act(y, channels, 3, act="relu", name="layer.1")
    return _finish(b, y)


def build_hardswish(
    channels: int = 16, layers: int = 3, decomposed: bool = False, seed: int = 0
) -> onnx.ModelProto:
    """``layers`` conv-bn layers (the first with stride 2) activated by HardSwish: the op, or (``decomposed``)
    ``x * HardSigmoid(x)``."""
    b, x = _start("hardswish_mul" if decomposed else "hardswish", seed)
    for index in range(layers):
        with b.scope(f"layer.{index}"):
            gain = 1.0 if index == 0 else HARDSWISH_GAIN
            y = b.conv(x, channels, 3, 2 if index == 0 else 1, bias=False, name="conv", gain=gain)
            x = hardswish(b, b.batchnorm(y, name="bn"), decomposed, name="act")
    return _finish(b, x)

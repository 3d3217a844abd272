"""A tiny ResNet (basic blocks) classifier built with :class:`GraphBuilder`."""

from __future__ import annotations

import onnx

from qdq_compiler.models.builder import GraphBuilder

PROBE_MAX_RESOLUTION = 128  # BN statistics are calibrated on at most 128x128 probes


def _basic_block(b: GraphBuilder, x: str, out_ch: int, stride: int) -> str:
    """conv-bn-relu-conv-bn + skip (1x1 conv-bn projection when the shape changes) + Add + relu."""
    in_ch = b.shape(x)[1]
    y = b.conv(x, out_ch, 3, stride, bias=False, name="conv1")
    y = b.relu(b.batchnorm(y, name="bn1"), name="relu1")
    # The residual branch is scaled down (gain 1 instead of sqrt(2)) so the sum stays O(1).
    y = b.conv(y, out_ch, 3, 1, bias=False, name="conv2", gain=1.0)
    y = b.batchnorm(y, name="bn2")
    skip = x
    if stride != 1 or in_ch != out_ch:
        with b.scope("downsample"):
            skip = b.conv(x, out_ch, 1, stride, p=0, bias=False, name="conv")
            skip = b.batchnorm(skip, name="bn")
    y = b.add(y, skip, name="add")
    return b.relu(y, name="relu2")


def build_resnet_blocks(
    width: int = 16,
    resolution: int = 64,
    num_blocks: int = 2,
    seed: int = 0,
    num_classes: int = 10,
) -> onnx.ModelProto:
    """Stem conv-bn-relu, ``num_blocks`` basic blocks (one stride-2 with projection), GAP, Flatten, Gemm.

    Input ``images`` float32 ``[1, 3, resolution, resolution]``; output ``logits`` ``[1, num_classes]``.
    """
    if num_blocks < 1:
        raise ValueError("num_blocks must be >= 1")
    b = GraphBuilder("resnet_blocks", seed=seed)
    probe_res = min(resolution, PROBE_MAX_RESOLUTION)
    x = b.add_input("images", (1, 3, resolution, resolution), probe_shape=(1, 3, probe_res, probe_res))
    with b.scope("stem"):
        x = b.conv_bn_act(x, width, 3, 2, act="relu", in_act="linear")
    ch = width
    down_index = num_blocks // 2
    for i in range(num_blocks):
        stride = 2 if i == down_index else 1
        if stride == 2:
            ch *= 2
        with b.scope(f"layer.{i}"):
            x = _basic_block(b, x, ch, stride)
    x = b.global_avg_pool(x, name="pool")
    x = b.flatten(x, name="flatten")
    logits = b.gemm(x, num_classes, name="fc", gain=1.0)
    b.add_output(b.rename_tensor(logits, "logits"))
    return b.build()
